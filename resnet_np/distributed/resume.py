"""Resuming a run of several processes: rank 0 reads the checkpoint, every rank gets it.

Rank 0 alone writes checkpoints, so only its machine need hold the run's
folder. A checkpoint records the number of processes that trained it
(``config["world_size"]``, 1 when absent): the global batch (ranks x
``--batch-size``) and each rank's share of every epoch depend on it, so a run
resumes only on that many processes.
"""
from ..training.checkpoint import CheckpointError, load_checkpoint


def read_checkpoint(path, comm):
    """The :class:`~resnet_np.training.Checkpoint` at ``path``, read on rank 0, on every rank."""
    if comm.size == 1:
        return load_checkpoint(path)
    return comm.bcast_object(load_checkpoint(path) if comm.rank == 0 else None)


def check_world_size(checkpoint, size):
    """Raise a CheckpointError saying what to do if ``checkpoint`` was trained on another
    number of processes than ``size``."""
    saved = checkpoint.config.get("world_size", 1)
    if saved == size:
        return
    batch = checkpoint.config.get("batch_size")
    command = (f"mpiexec -n {saved} resnet-np train --resume {checkpoint.path}" if saved > 1
               else f"resnet-np train --resume {checkpoint.path} (one process, no mpiexec)")
    raise CheckpointError(
        f"{checkpoint.path} was trained on {saved} process{'es' * (saved != 1)} "
        f"(batch {batch} each, {saved * batch} per step) and this run has {size}: resuming on "
        f"another number would change the batch of every step and each rank's share of the "
        f"data, so the run would not continue as it began. Resume it with `{command}`, or "
        "start a new run")
