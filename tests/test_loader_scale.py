"""The loader's costs that grow with the corpus (issue 25, benchmarks/scale.py): DataLoader workers freeze what they
inherit, so their garbage collections do not copy the main process's pages as a plan of 500,000 samples is made."""
import gc

from torch.utils.data import DataLoader, IterableDataset

from fmashard.data.loader import LoaderConfig, ShardLoader, freeze_inherited
from fmashard.data.sources import resolve_source
from synth_shards import write_synthetic_shards


class FrozenCount(IterableDataset):
    def __iter__(self):
        yield gc.get_freeze_count()


def test_a_worker_starts_with_what_it_inherited_out_of_the_collectors_reach():
    frozen = next(iter(DataLoader(FrozenCount(), batch_size=None, num_workers=1, worker_init_fn=freeze_inherited)))
    assert frozen > 10_000 and gc.get_freeze_count() == 0      # the worker's objects (torch's, ours), not ours here


def test_the_shard_loaders_workers_freeze_what_they_inherit(tmp_path):
    write_synthetic_shards(tmp_path, [5, 4], clip_samples=1000)
    loader = ShardLoader(resolve_source(tmp_path), LoaderConfig(batch_size=2, num_workers=2))
    assert sum(len(batch) for batch in loader) == 9
    assert loader._dataloader.worker_init_fn is freeze_inherited
