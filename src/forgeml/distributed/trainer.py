"""``DistributedTrainer``: the seed's third scenario, ``AIEnhancedTrainer`` on every rank of a job.

Every rank builds the same model and optimizer and calls the same methods;
the trainer

- wraps the model in :class:`DistributedDataParallel` (rank 0's weights win at
  the start; gradients are averaged in every backward);
- shards the training data with a :class:`DistributedSampler` (``set_epoch``
  each epoch; the batch size is per rank), and the validation and test data
  without padding, so every sample is counted once;
- adds up the ranks' sums for the reported metrics, so every rank's history is
  the same (the loss and accuracy of the whole global batch);
- runs the AI services on rank 0 alone: at each epoch boundary rank 0 decides
  what to apply and broadcasts its decisions (the actions, synthetic samples,
  the events), and every other rank applies the same changes, so the replicas
  never drift apart; an early stop or a cancelled job stops every rank at the
  same epoch;
- writes checkpoints from rank 0 only, holding the bare model's state (no
  ``module.`` prefix), so a run resumes with any number of ranks, or in one
  process with ``AIEnhancedTrainer``;
- logs from rank 0 only.

A loss that turns NaN on one rank is noticed by all of them when the epoch
ends (ranks never stop at different steps, which would leave the others
waiting in a collective), and all restore the last good epoch together.
"""

from __future__ import annotations

from ..data.dataloader import DataLoader
from ..data.sampler import Sampler
from ..io.checkpoint import load
from ..training.ai_trainer import AIEnhancedTrainer
from ..training.guardrails import Refused, guardrail_for
from .ddp import DistributedDataParallel
from .group import ProcessGroup, default_group, init_process_group, is_initialized

__all__ = ["DistributedTrainer"]


class _EvalShard(Sampler):
    """Every ``world_size``-th index from ``rank``: disjoint shards that together cover the data set once."""

    def __init__(self, dataset, rank: int, world_size: int) -> None:
        self.dataset, self.rank, self.world_size = dataset, rank, world_size

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.world_size))


def _resolve_group(backend) -> ProcessGroup:
    if isinstance(backend, ProcessGroup):
        if not is_initialized():
            init_process_group(backend)
        return backend
    if backend is None:
        return default_group() if is_initialized() else init_process_group("mpi")
    if isinstance(backend, str):
        if is_initialized():
            group = default_group()
            if group.name != backend:
                raise ValueError(
                    f"backend={backend!r}, but the process group is already initialized with {group.name!r}"
                )
            return group
        return init_process_group(backend)
    raise TypeError(
        f"backend must be a process group (MPIBackend(), NCCLBackend(...)), a name or None, got {backend!r}"
    )


class DistributedTrainer(AIEnhancedTrainer):
    """``DistributedTrainer(model, optimizer, backend)``: data-parallel :class:`AIEnhancedTrainer`.

    ``backend``: a process group (``MPIBackend()``, ``NCCLBackend(local_rank,
    world_size)``), ``'mpi'``/``'nccl'``, or None for the default group (made
    with MPI when none exists). With NCCL the model trains on the rank's GPU
    unless ``device=`` says otherwise. ``ddp_options`` go to
    :class:`DistributedDataParallel` (``bucket_cap_mb``,
    ``find_unused_parameters``, ``broadcast_buffers``). ``config``,
    ``batch_size`` (per rank) and the other keyword arguments are those of
    :class:`AIEnhancedTrainer`; ``log`` is called on rank 0 only unless
    ``log_all_ranks``.
    """

    def __init__(
        self,
        model,
        optimizer,
        backend=None,
        config=None,
        loss_fn=None,
        *,
        ddp_options: dict | None = None,
        log_all_ranks: bool = False,
        **trainer_kwargs,
    ) -> None:
        group = _resolve_group(backend)
        if group.name == "nccl" and trainer_kwargs.get("device") is None:
            trainer_kwargs["device"] = group.device
        super().__init__(model, optimizer, config, loss_fn, **trainer_kwargs)
        self.group = group
        self.rank, self.world_size = group.rank, group.world_size
        if self.rank != 0 and not log_all_ranks:
            self._log = lambda message: None
        self.ddp = DistributedDataParallel(self.model, process_group=group, **(ddp_options or {}))
        self._first_bad = None  # (step, value) of this epoch's first non-finite loss on this rank
        self._decisions: list | None = None

    # -- data -----------------------------------------------------------------------------------
    def _train_loader(self, data):
        from .sampler import DistributedSampler

        if isinstance(data, DataLoader):
            if isinstance(data.sampler, DistributedSampler):
                self._train_dataset, self._collate = data.dataset, data.collate_fn
                self.batch_size = data.batch_size or self.batch_size
                return data
            self._train_dataset, self._collate = data.dataset, data.collate_fn
            self.batch_size = data.batch_size or self.batch_size
            return self._make_train_loader()
        return super()._train_loader(data)

    def _make_train_loader(self):
        from .sampler import DistributedSampler

        sampler = DistributedSampler(self._train_dataset, num_replicas=self.world_size, rank=self.rank, shuffle=True)
        return DataLoader(self._train_dataset, batch_size=self.batch_size, sampler=sampler, collate_fn=self._collate)

    def _eval_loader(self, data):
        if data is None:
            return None
        if isinstance(data, DataLoader) and isinstance(data.sampler, _EvalShard):
            return data  # sharded already
        if isinstance(data, DataLoader):
            dataset, batch_size, collate = data.dataset, data.batch_size or 256, data.collate_fn
        else:
            dataset, batch_size, collate = data, max(self.batch_size, 256), None
        shard = _EvalShard(dataset, self.rank, self.world_size)
        return DataLoader(dataset, batch_size=batch_size, sampler=shard, collate_fn=collate)

    def evaluate(self, loader) -> dict:
        """Loss (and accuracy) over the whole of ``loader``'s data: a ``DataLoader`` or a dataset is sharded
        across the ranks (each sample evaluated once, on one rank) and the ranks' sums are added up, so every
        rank returns the same figures, those one process would get. Call it on every rank."""
        return super().evaluate(self._eval_loader(loader))

    # -- the loop -------------------------------------------------------------------------------
    def _run_epoch(self, train_loader, val_loader):
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        self._first_bad = None
        return super()._run_epoch(train_loader, val_loader)

    def _train_forward(self, x):
        return self.ddp(x)

    def _nonfinite_loss(self, value: float, step: int, global_step: int | None = None) -> None:
        # Keep stepping (the all-reduce spreads the NaN to every rank); _combine_totals decides for all. Where
        # training stood at that step is kept, so that every rank resumes counting from there, as one process
        # that stopped at that step would (a divergence policy that retries the epoch then puts it back to the
        # epoch's start).
        if self._first_bad is None:
            self._first_bad = (step, value, self.global_step if global_step is None else global_step)

    def _combine_totals(self, total_loss: float, total: int, correct: int, classified: bool):
        everyone = self.group.all_gather_object((total_loss, total, correct, classified, self._first_bad))
        bad = [b for *_, b in everyone if b is not None]
        self._first_bad = None
        if bad:
            step, value, global_step = min(bad, key=lambda b: b[0])
            super()._nonfinite_loss(value, step, global_step)  # raises on every rank
        total_loss = sum(e[0] for e in everyone)
        return total_loss, sum(e[1] for e in everyone), sum(e[2] for e in everyone), all(e[3] for e in everyone)

    def _call(self, hook: str, *args) -> None:
        super()._call(hook, *args)
        if hook == "on_epoch_end":  # rank 0's callbacks may stop the run (a cancelled job): every rank stops
            self.stop_training = bool(self.group.broadcast_object(self.stop_training, 0))

    # -- the AI on rank 0, its decisions everywhere -----------------------------------------------
    def _launch(self, task: str, coro) -> None:
        if self.rank == 0:
            super()._launch(task, coro)
        else:
            coro.close()  # only rank 0 talks to the AI services

    async def _apply_ready(self, final: bool = False) -> None:
        if self.rank == 0:
            events_before = len(self.events)
            self._decisions = []
            try:
                await super()._apply_ready(final)
                payload = {
                    "decisions": self._decisions,
                    "events": self.events[events_before:],
                    "synthetic": self.synthetic,
                    "diagnosis": self.diagnosis,
                }
            finally:
                self._decisions = None
            self.group.broadcast_object(payload, 0)
            return
        payload = self.group.broadcast_object(None, 0)
        for kind, value in payload["decisions"]:
            if kind == "trial":
                self._open_trial()
            elif kind == "action":
                action, record = value
                guardrail_for(action).apply(self, action)
                if record is not None:  # the same record as rank 0's, so that verdicts read alike on every rank
                    record = record.model_copy()
                    self.changes.append(record)
                    if self._trial is not None and record.verdict == "on_trial":
                        self._trial["records"].append(record)
            else:
                self._mix_in(value)
        self.events.extend(payload["events"])
        self.synthetic, self.diagnosis = payload["synthetic"], payload["diagnosis"]

    def _apply(self, action, task, provider, rationale, confidence, round_, citations=()) -> None:
        before, records = len(self.events), len(self.changes)
        super()._apply(action, task, provider, rationale, confidence, round_, citations)
        if self._decisions is not None and len(self.events) > before and self.events[-1].applied:
            record = self.changes[-1] if len(self.changes) > records else None
            self._decisions.append(("action", (action, record)))

    def _open_trial(self) -> None:
        super()._open_trial()
        if self._decisions is not None:
            self._decisions.append(("trial", None))

    def _mix_in(self, samples) -> None:
        super()._mix_in(samples)
        if self._decisions is not None:
            self._decisions.append(("synthetic", samples))

    def run_lr_range_test(self, min_lr: float, max_lr: float, steps: int):
        raise Refused("a learning-rate range test is not run in a distributed job")

    def _synthetic_ab(self) -> None:
        # An A/B needs every rank to train both arms; the samples are not mixed in without one (never by default).
        self._synthetic_candidates = None
        self._event(
            "synthetic_data",
            "experiment",
            "trainer",
            reason="the A/B that decides whether synthetic samples help is not run in a distributed job: not mixed in",
        )

    def _report(self, test_data):
        report = super()._report(test_data)
        # the AI ran on rank 0: its usage and cost are rank 0's to tell, and every rank returns the same report
        usage, cost = self.group.broadcast_object((report.provider_usage, report.total_cost_usd), 0)
        return report.model_copy(update={"provider_usage": usage, "total_cost_usd": cost})

    # -- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, path) -> None:
        """Rank 0 writes the checkpoint (atomically); every rank returns once it is on disk."""
        if self.rank == 0:
            super().save_checkpoint(path)
        self.group.barrier()

    def load_checkpoint(self, path) -> None:
        """Every rank resumes from ``path`` (a checkpoint written with any world size, or by one process);
        the ranks need a shared file system, as for the data."""
        self.group.barrier()
        self.load_state_dict(load(path, map_location=self.device))
