"""The data path stages: sources -> tar stream -> records -> plan/loader -> collate -> device -> windows."""
