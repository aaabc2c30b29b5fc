"""DistributedSampler: shards as torch.utils.data.DistributedSampler's, shuffles the same on every rank."""

import pytest

import forgeml as fm
from forgeml.data import DataLoader, TensorDataset
from forgeml.data.sampler import Sampler
from forgeml.distributed import DistributedSampler

# (dataset length, replicas): even and odd splits, fewer samples than ranks, an empty dataset,
# and padding longer than the dataset (2 samples on 7 ranks).
CASES = [(10, 1), (10, 2), (10, 3), (10, 4), (11, 4), (7, 2), (9, 3), (3, 4), (2, 7), (1, 5), (0, 3), (13, 5), (100, 8)]


def _shards(n, replicas, **kwargs):
    return [list(DistributedSampler(range(n), num_replicas=replicas, rank=r, **kwargs)) for r in range(replicas)]


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize(("n", "replicas"), CASES)
def test_unshuffled_shards_match_torch(n, replicas, drop_last):
    TorchDistributedSampler = pytest.importorskip("torch.utils.data.distributed").DistributedSampler
    for rank in range(replicas):
        ours = DistributedSampler(range(n), num_replicas=replicas, rank=rank, shuffle=False, drop_last=drop_last)
        theirs = TorchDistributedSampler(range(n), num_replicas=replicas, rank=rank, shuffle=False, drop_last=drop_last)
        assert list(ours) == list(theirs)
        assert len(ours) == len(theirs) == ours.num_samples == theirs.num_samples
        assert ours.total_size == theirs.total_size


@pytest.mark.parametrize(("n", "replicas"), [(10, 3), (2, 7), (11, 4)])
def test_padding_repeats_from_the_start_and_drop_last_cuts_the_tail(n, replicas):
    padded = _shards(n, replicas, shuffle=False)
    flat = sorted(i for shard in padded for i in shard)
    total = len(padded[0]) * replicas
    assert total >= n and all(len(s) == len(padded[0]) for s in padded)
    expected = (list(range(n)) * (total // n + 1))[:total]
    assert flat == sorted(expected)
    dropped = _shards(n, replicas, shuffle=False, drop_last=True)
    assert sorted(i for shard in dropped for i in shard) == list(range(n - n % replicas))


@pytest.mark.parametrize(("n", "replicas"), [(10, 2), (12, 4), (13, 5), (9, 3)])
def test_shuffled_shards_are_disjoint_and_cover_the_dataset(n, replicas):
    for drop_last in (False, True):
        shards = _shards(n, replicas, shuffle=True, seed=3, drop_last=drop_last)
        lengths = {len(s) for s in shards}
        assert len(lengths) == 1
        flat = [i for s in shards for i in s]
        if n % replicas == 0:
            assert sorted(flat) == list(range(n))  # no padding: a partition
        elif drop_last:
            assert len(set(flat)) == len(flat) == n - n % replicas
        else:
            assert set(flat) == set(range(n))
    # the shuffle is not the identity
    assert [i for s in zip(*_shards(n, replicas, seed=3)) for i in s] != list(range(n))


def _order(n, replicas, seed, epoch):
    """The full permutation every rank agrees on, rebuilt by interleaving the shards."""
    samplers = [DistributedSampler(range(n), num_replicas=replicas, rank=r, seed=seed) for r in range(replicas)]
    for s in samplers:
        s.set_epoch(epoch)
    shards = [list(s) for s in samplers]
    return [shards[r][k] for k in range(len(shards[0])) for r in range(replicas)]


def test_every_rank_draws_the_same_permutation_for_seed_and_epoch():
    n = 50
    whole = DistributedSampler(range(n), num_replicas=1, rank=0, seed=7)
    whole.set_epoch(2)
    assert _order(n, 5, seed=7, epoch=2) == list(whole)  # the ranks' shards interleave into one permutation
    assert sorted(list(whole)) == list(range(n))
    assert _order(n, 5, seed=7, epoch=2) == _order(n, 5, seed=7, epoch=2)  # same seed: same order
    assert _order(n, 5, seed=7, epoch=2) != _order(n, 5, seed=7, epoch=3)  # set_epoch changes it
    assert _order(n, 5, seed=7, epoch=2) != _order(n, 5, seed=8, epoch=2)  # so does the seed
    # seed + epoch is what counts, as in PyTorch
    assert _order(n, 5, seed=7, epoch=2) == _order(n, 5, seed=8, epoch=1)


def test_shuffle_ignores_the_global_random_state():
    sampler = DistributedSampler(range(20), num_replicas=2, rank=1)
    fm.manual_seed(1)
    first = list(sampler)
    fm.manual_seed(2)
    fm.rand(5)
    assert list(sampler) == first == list(sampler)  # no set_epoch: the same order every time


def test_defaults_come_from_the_process_group():
    assert not fm.distributed.is_initialized()
    sampler = DistributedSampler(range(6), shuffle=False)
    assert (sampler.num_replicas, sampler.rank) == (1, 0)
    assert list(sampler) == list(range(6))
    assert isinstance(sampler, Sampler)
    sampler = DistributedSampler(range(6))
    assert sampler.epoch == 0 and sampler.seed == 0 and sampler.shuffle and not sampler.drop_last


def test_defaults_follow_an_initialized_group():
    from forgeml.distributed import ProcessGroup, destroy_process_group, init_process_group

    init_process_group(ProcessGroup(rank=2, world_size=3))  # a stand-in group: no collectives are run
    try:
        sampler = DistributedSampler(range(10), shuffle=False)
        assert (sampler.num_replicas, sampler.rank) == (3, 2)
        assert list(sampler) == [2, 5, 8, 1]
    finally:
        destroy_process_group()


def test_works_as_a_dataloader_sampler():
    x = fm.arange(11).float().reshape(11, 1)
    dataset = TensorDataset(x, fm.arange(11))
    seen = []
    for rank in range(3):
        sampler = DistributedSampler(dataset, num_replicas=3, rank=rank, seed=5)
        sampler.set_epoch(1)
        loader = DataLoader(dataset, batch_size=2, sampler=sampler)
        assert len(loader) == 2  # 4 samples per rank
        batches = list(loader)
        assert [len(b[1]) for b in batches] == [2, 2]
        seen += [int(i) for b in batches for i in b[1].tolist()]
    assert set(seen) == set(range(11)) and len(seen) == 12  # one sample repeated as padding


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_replicas": 2, "rank": 2}, ValueError, r"invalid rank 2.*\[0, 1\]"),
        ({"num_replicas": 2, "rank": -1}, ValueError, r"invalid rank -1"),
        ({"num_replicas": 0, "rank": 0}, ValueError, "num_replicas must be at least 1"),
        ({"num_replicas": 2.0, "rank": 0}, TypeError, "num_replicas must be an integer"),
        ({"num_replicas": 2, "rank": "0"}, TypeError, "rank must be an integer"),
        ({"num_replicas": 2, "rank": 0, "seed": 1.5}, TypeError, "seed must be an integer"),
    ],
)
def test_errors_name_the_problem(kwargs, error, match):
    with pytest.raises(error, match=match):
        DistributedSampler(range(4), **kwargs)


def test_dataset_without_length_is_rejected():
    with pytest.raises(TypeError, match="must have a length"):
        DistributedSampler(iter(range(4)), num_replicas=1, rank=0)


def test_ranks_of_a_real_job_share_one_permutation(mpirun):
    reports = mpirun(
        """
        import forgeml as fm
        import forgeml.distributed as dist
        from forgeml.data import DataLoader, TensorDataset
        from mpi_report import report

        dist.init_process_group("mpi")
        dataset = TensorDataset(fm.arange(11).float(), fm.arange(11))
        sampler = dist.DistributedSampler(dataset, seed=4)  # num_replicas and rank from the group
        sampler.set_epoch(2)
        seen = [int(i) for _, y in DataLoader(dataset, batch_size=3, sampler=sampler) for i in y.tolist()]
        report(replicas=sampler.num_replicas, rank=sampler.rank, seen=seen)
        dist.destroy_process_group()
        """,
        n=2,
    ).check()
    whole = DistributedSampler(range(11), num_replicas=1, rank=0, seed=4)
    whole.set_epoch(2)
    order = list(whole)
    for rank in (0, 1):
        assert reports[rank]["replicas"] == 2 and reports[rank]["rank"] == rank
        assert reports[rank]["seen"] == (order + order[:1])[rank::2]
