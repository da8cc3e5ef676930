"""The shard format's one home: tar layout (`tar`), codecs (`codecs`), the manifest (`manifest`) and
`DatasetSpec` / `ShardInfo` (`spec`).  Depends on `fmashard.storage` and `fmashard.errors` only."""
from fmashard.format.codecs import CODECS, SHARD_CODECS, Codec, get_codec
from fmashard.format.manifest import FORMAT_VERSION, MANIFEST_NAME, load_manifest
from fmashard.format.spec import DatasetSpec, ShardInfo

__all__ = ["CODECS", "SHARD_CODECS", "Codec", "DatasetSpec", "FORMAT_VERSION", "MANIFEST_NAME", "ShardInfo",
           "get_codec", "load_manifest"]
