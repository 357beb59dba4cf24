r"""SVI under PyTorch Lightning: data-parallel training of a Pyro (model, guide) pair.

:func:`fit_svi_lightning` trains any model and guide with one subsampled data plate by
Lightning's own machinery, as Pyro's ``examples/svi_lightning.py`` does: Pyro's ELBO
used as an ``nn.Module`` (``elbo(model, guide)``, an ``ELBOModule``), a plain
``torch.optim.Adam`` over its parameters, and Lightning's ``Trainer`` running the
epochs. With ``num_processes > 1`` the ``Trainer`` runs DDP (distributed data parallel;
the ``gloo`` backend on CPU) in that many processes, each training on its own shard of
the data.

The data set is never split: every process holds the model's arguments whole, and the
data loader yields *indices* (``range(N)``, sharded by ``DistributedSampler`` under
DDP). Each step hands the plate its process's batch of indices as the plate's subsample
(:class:`~inference.subsample.GivenSubsample`), so the model reads ``x[index]``
itself and Pyro scales the likelihood by ``N / n`` with ``n`` the local batch. Each
process's loss is then an unbiased estimate of the whole data set's negative ELBO, and
DDP's average of the processes' gradients is the gradient of the average of those
estimates: the same objective as one process with the global batch,

.. math::

    \nabla \widehat{\mathcal L} = \frac1P \sum_{p=1}^P \nabla \Big[
    \frac{N}{n} \sum_{i \in B_p} \widehat{\ell}_i + \text{global terms} \Big],
    \qquad n = \frac{\text{batch\_size}}{P}.

Parameters are created before the optimiser is built, by running the loss once on the
first batch (as Pyro's example does), in a private param store: ``nn.Module`` weights
registered with ``pyro.module`` or held by a ``PyroModule``, and plain ``pyro.param``
sites alike. A ``PyroModule`` keeps the parameter mode it was built in: build it under
``pyro.settings.set(module_local_params=True)``, as Pyro advises for ``ELBOModule``, or
not; both train here. (The mode is not switched for it: a ``PyroModule`` built in the
global mode fails when called in the local one.) The networks the model and guide are
bound to travel to the worker processes with them; when training ends, Lightning loads
rank 0's weights back into the caller's own modules (in place), so ``decoder.model`` is
trained after the call.

With several processes, Lightning *spawns* them (``DDPStrategy(start_method="spawn")``,
i.e. ``strategy="ddp_spawn"``): this works from a script or under pytest (Lightning's
default ``"ddp"`` launcher re-executes ``sys.argv`` in every worker, which under pytest
would re-run the test session). Hence what the model and guide need must pickle:
module-level functions, ``nn.Module`` s and their bound methods do; closures do not. A
script must guard its entry point with ``if __name__ == "__main__":``. Starting the
workers (each imports torch, Pyro and Lightning) costs seconds: DDP pays off only when
a step's work is much larger than that of the digits VAE.

References
----------
Pyro's ``examples/svi_lightning.py`` (distributed SVI via PyTorch Lightning).
Li, S. et al. (2020). PyTorch Distributed: Experiences on Accelerating Data Parallel
Training. VLDB 13(12).
"""

import logging
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.infer import ELBO
from torch import nn
from torch.distributions import constraints
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from inference.isolation import Room, cast, check_seed, prepare
from inference.sites import plate_size, trace_model
from inference.subsample import FirstIndices, GivenSubsample
from inference.svi.batches import epoch_seed
from inference.svi.elbos import ELBOS, make_elbo
from inference.validation import check_positive_float, check_positive_int

try:
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import DDPStrategy
except ImportError:  # the optional extra
    pl = DDPStrategy = None

__all__ = ["LightningFit", "fit_svi_lightning"]

MISSING = "Lightning training needs the optional extra: pip install 'vilab[lightning]'"


THREADS_PER_PROCESS = 1  # as inference.isolation.NUM_THREADS: one process, one core

_LOUD = ("lightning.pytorch", "lightning.fabric")  # loggers that announce devices, ranks


@dataclass(frozen=True, eq=False)
class LightningFit:
    """What :func:`fit_svi_lightning` returns.

    model, guide: the callables given; their ``nn.Module`` s now hold the trained weights.
    params: every Pyro parameter site after training, name → constrained value
    (detached copies; ``pyro.module`` weights appear as ``"decoder$$$net.0.weight"``).
    losses: one number per epoch, the mean over its steps (and processes) of the loss per
    data point: the negative ELBO estimate of the whole data set divided by N, in nats.
    elapsed_s: wall-clock seconds of the training epochs (rank 0), without starting the
    processes. total_s: the whole call, start-up and the weights' return included.
    num_processes: P. batch_size: the global batch, ``P`` times each process's batch.
    num_epochs: passes over the data.
    """

    model: object
    guide: object
    params: dict
    losses: np.ndarray
    elapsed_s: float
    total_s: float
    num_processes: int
    batch_size: int
    num_epochs: int

    @property
    def seconds_per_epoch(self) -> float:
        """``elapsed_s / num_epochs``."""
        return self.elapsed_s / self.num_epochs


def fit_svi_lightning(
    model,
    guide,
    *model_args,
    plate: str = "data",
    num_epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    elbo="meanfield",
    seed: int = 0,
    num_processes: int = 1,
    accelerator: str = "cpu",
    progress_bar: bool = False,
    model_kwargs: dict | None = None,
) -> LightningFit:
    """Train ``guide`` and ``model``'s parameters by SVI with a Lightning ``Trainer``.

    Parameters
    ----------
    model, guide : callable
        A Pyro model and guide with one subsampled plate ``plate`` (both open it); every
        parameter must exist after one call. ``model_args`` and ``model_kwargs`` go to
        both, whole (the plate's indices select the batch).
    plate : str
        The data plate; its full size N is the number of data points.
    num_epochs : int
        Passes over the data (each process passes over its shard).
    batch_size : int
        The *global* batch: data points per optimiser step over all processes. Each of
        the ``num_processes`` processes takes ``batch_size // num_processes`` (so
        ``batch_size`` must be a multiple of it), and 1 or P processes see the same
        number of data points per step. Must be at most N.
    lr : float
        Adam's learning rate, constant.
    elbo : {"meanfield", "trace", "enum"} or pyro.infer.ELBO
        The loss: ``TraceMeanField_ELBO`` (analytic KL where it exists), ``Trace_ELBO``,
        ``TraceEnum_ELBO``, or an ELBO instance.
    seed : int
        Seeds the parameters' creation, the data's shuffling (every epoch a fresh
        permutation, sharded alike in every process) and each process's draws (from
        ``(seed, rank)``). The caller's RNG state is left alone.
    num_processes : int
        1: one process, no strategy. More: DDP over that many spawned processes (the
        ``gloo`` backend on CPU); ``THREADS_PER_PROCESS`` intra-op threads each.
    accelerator : str
        Lightning's accelerator (``"cpu"``, ``"gpu"``, ...).
    progress_bar : bool
        Lightning's progress bar (the rest of its console output is kept quiet).

    Returns
    -------
    LightningFit
    """
    if pl is None:
        raise ImportError(MISSING)
    num_processes = check_positive_int("num_processes", num_processes)
    num_epochs = check_positive_int("num_epochs", num_epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    lr, seed = check_positive_float("lr", lr), check_seed(seed)
    if not isinstance(elbo, ELBO) and elbo not in ELBOS:
        raise ValueError(f"elbo must be one of {', '.join(ELBOS)} or a pyro.infer.ELBO")
    loss = make_elbo(elbo)
    room = Room(seed, dtype=torch.float32, num_threads=None)
    args, kwargs = prepare(tuple(model_args), dict(model_kwargs or {}), room)
    start = time.perf_counter()
    with (
        torch.random.fork_rng(),
        pyro.get_param_store().scope(),  # the caller's store is left as it was
        _quiet(),
        _threads(THREADS_PER_PROCESS),
    ):
        torch.manual_seed(seed)
        size = _plate_size(model, plate, args, kwargs)
        if batch_size > size:
            raise ValueError(f"batch_size {batch_size} is larger than plate {plate!r} ({size})")
        if batch_size % num_processes:
            raise ValueError(
                f"batch_size {batch_size} is not a multiple of num_processes {num_processes}"
            )
        task = SVITask(
            loss(model, guide), args, kwargs, plate, size, batch_size, lr, seed, num_epochs
        )
        task.discover_params(num_processes)
        trainer = pl.Trainer(
            accelerator=accelerator,
            devices=num_processes,
            strategy=_strategy(num_processes, accelerator),
            max_epochs=num_epochs,
            enable_progress_bar=progress_bar,
            enable_model_summary=False,
            enable_checkpointing=False,
            logger=False,
            use_distributed_sampler=False,  # SVITask.train_dataloader shards, seeded
        )
        trainer.fit(task)
    return LightningFit(
        model=model,
        guide=guide,
        params=task.constrained_params(),
        losses=task.epoch_losses.numpy().copy(),
        elapsed_s=float(task.elapsed),
        total_s=time.perf_counter() - start,
        num_processes=num_processes,
        batch_size=batch_size,
        num_epochs=num_epochs,
    )


def _plate_size(model, plate: str, args: tuple, kwargs: dict) -> int:
    return plate_size(trace_model(FirstIndices()(model), args, kwargs), plate)


def _strategy(num_processes: int, accelerator: str):
    if num_processes == 1:
        return "auto"
    backend = "gloo" if accelerator == "cpu" else None  # None: Lightning's (nccl on GPUs)
    # "spawn", not "fork": a forked worker whose parent has run OpenMP threads hangs in
    # its first multi-threaded op (measured here), and not Lightning's default "popen",
    # which re-runs sys.argv (under pytest, the whole test session) in every worker.
    return _QuietDDP(process_group_backend=backend, start_method="spawn")


@contextmanager
def _quiet():
    """Lightning's announcements (devices, ranks) and its advice on data loader workers
    off; warnings and logger levels restored on exit."""
    levels = {name: logging.getLogger(name).level for name in _LOUD}
    with warnings.catch_warnings():
        _silence()
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def _silence() -> None:
    for name in _LOUD:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


@contextmanager
def _threads(num_threads: int):
    old = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


_Strategy = DDPStrategy if DDPStrategy is not None else object
_LightningModule = pl.LightningModule if pl is not None else nn.Module


class _QuietDDP(_Strategy):
    """Lightning's DDP, quiet in the worker processes too (they start with fresh logging)."""

    def setup_environment(self) -> None:
        _silence()  # a spawned worker is ours alone: nothing to restore
        super().setup_environment()


class SVITask(_LightningModule):
    """The Lightning side of a fit: the ELBO module, its parameters, data and epochs.

    loss_fn: ``elbo(model, guide)``. args, kwargs: the model's arguments (whole data).
    plate, size: the data plate and its N. batch_size: global; each of the P processes
    takes ``batch_size // P``. Buffers ``epoch_losses`` and ``elapsed`` carry the results
    back from rank 0 with the weights.
    """

    def __init__(self, loss_fn, args, kwargs, plate, size, batch_size, lr, seed, num_epochs):
        super().__init__()
        self.loss_fn = loss_fn
        owners = {id(m): m for m in map(_owning_module, (loss_fn.model, loss_fn.guide)) if m}
        self.networks = nn.ModuleList(owners.values())
        self.args, self.kwargs, self.plate, self.size = args, kwargs, plate, size
        self.batch_size, self.lr, self.seed = batch_size, lr, seed
        self.leaves, self.constraints = {}, {}
        self.param_state = {"params": {}, "constraints": {}}
        self.loose = nn.ParameterList()
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        self.register_buffer("epoch_losses", nan.repeat(num_epochs))
        self.register_buffer("elapsed", nan)
        self._sum, self._steps, self._started, self._checked = 0.0, 0, 0.0, False

    def discover_params(self, num_processes: int) -> None:
        """Run the loss once on the first local batch, in a private param store, and keep
        every parameter site it meets (as Pyro's example does before the optimiser).

        Plain ``pyro.param`` values become ``nn.Parameter`` s, given back to the private
        store that every step uses, so DDP and the optimiser see them.
        """
        indices = torch.arange(self.batch_size // num_processes)
        store = pyro.get_param_store()
        with (
            store.scope() as state,
            poutine.trace(param_only=True) as capture,
            GivenSubsample(self.plate, indices),
        ):
            self.loss_fn(*self.args, **self.kwargs)
        known = {id(p) for p in self.networks.parameters()}
        for name, site in capture.trace.nodes.items():
            if site["type"] != "param":
                continue
            value = site["value"]
            leaf = value.unconstrained() if hasattr(value, "unconstrained") else value
            if not leaf.requires_grad:
                continue
            constraint = state["constraints"].get(name, site["kwargs"].get("constraint"))
            if not isinstance(leaf, nn.Parameter):
                leaf = nn.Parameter(leaf.detach())
            if name in state["params"]:  # a store param: every step's store holds the leaf
                self.param_state["params"][name] = leaf
                self.param_state["constraints"][name] = constraint
            if id(leaf) not in known:
                self.loose.append(leaf)
                known.add(id(leaf))
            self.leaves[name], self.constraints[name] = leaf, constraint
        if not self.leaves:
            raise ValueError("the model and guide have no parameters to train")

    def constrained_params(self) -> dict:
        """Every parameter site, name → its constrained value (a detached copy)."""
        with torch.no_grad():
            return {
                name: biject_to(self.constraints[name] or constraints.real)(leaf).detach().clone()
                for name, leaf in self.leaves.items()
            }

    def train_dataloader(self) -> DataLoader:
        """The indices ``range(N)``, reshuffled every epoch; under DDP each process takes
        its shard (``DistributedSampler``, seeded by ``seed``)."""
        indices = TensorDataset(torch.arange(self.size))
        world = self.trainer.world_size
        local = self.batch_size // world
        if world == 1:
            generator = torch.Generator().manual_seed(self.seed)
            return DataLoader(indices, batch_size=local, shuffle=True, generator=generator)
        sampler = DistributedSampler(indices, shuffle=True, seed=self.seed)
        return DataLoader(indices, batch_size=local, sampler=sampler)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def on_train_start(self) -> None:
        self.args, self.kwargs = cast((self.args, self.kwargs), None, self.device)
        torch.set_num_threads(THREADS_PER_PROCESS)
        torch.manual_seed(epoch_seed(self.seed, self.global_rank))
        self._started = time.perf_counter()

    def training_step(self, batch, batch_idx):
        (indices,) = batch
        with (
            pyro.get_param_store().scope(self.param_state),
            GivenSubsample(self.plate, indices),
        ):
            loss = self.loss_fn(*self.args, **self.kwargs)
        self._sum += float(loss.detach()) / self.size
        self._steps += 1
        return loss

    def on_after_backward(self) -> None:
        if self.trainer.world_size > 1 and not self._checked:
            self._check_gradients()
            self._checked = True

    def _check_gradients(self) -> None:
        """Under DDP every parameter needs a gradient at every step. One without was not
        used: e.g. a network the model reaches through a global, not through what was
        pickled (the model, its module, its arguments), is a fresh copy in the worker."""
        unused = [name for name, leaf in self.leaves.items() if leaf.grad is None]
        if unused:
            raise RuntimeError(
                f"parameter(s) {', '.join(unused[:5])} got no gradient in process "
                f"{self.global_rank}: under DDP the model and guide must use every "
                "parameter at every step, and reach their networks through themselves or "
                "their arguments (not globals)"
            )

    def on_train_epoch_end(self) -> None:
        mean = torch.tensor(self._sum / max(self._steps, 1), dtype=torch.float64)
        mean = self.trainer.strategy.reduce(mean.to(self.device), reduce_op="mean")
        self.epoch_losses[self.current_epoch] = mean
        self._sum, self._steps = 0.0, 0

    def on_train_end(self) -> None:
        self.elapsed.fill_(time.perf_counter() - self._started)


def _owning_module(fn) -> nn.Module | None:
    """``fn`` itself if it is an ``nn.Module``, the module of a bound method, else None."""
    if isinstance(fn, nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None
