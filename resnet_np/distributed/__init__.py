"""Data-parallel training on several processes: MPI (mpi4py) on CPUs, NCCL on GPUs.

    comm.py            communicators: SingleProcess, MPICommunicator, NCCLCommunicator
    launch.py          world_size() from the launcher's environment, init(), abort_on_error,
                       check_same_run (every rank holds the same data and settings)
    watchdog.py        SignalWatchdog: Ctrl-C and SIGTERM end the job even while a rank waits
    data_parallel.py   broadcast_state, GradientAllreduce (bucketed, overlapped), DataParallel
    sampler.py         ShardedLoader: each rank's disjoint share of every epoch's order
    resume.py          checkpoints read on rank 0; the number of ranks must not change
    sync_batchnorm.py  SyncBatchNorm2d: batch statistics of the global batch
    metrics.py         evaluation of every rank's shard, combined

``mpiexec -n 4 resnet-np train ...`` uses all of this; in a program of one's own:

    from resnet_np import distributed
    comm = distributed.init()                 # under mpiexec; "gpu" for NCCL
    parallel = distributed.DataParallel(model, comm, sync_bn=True)
    loader = distributed.ShardedLoader(train_set, 64, comm.rank, comm.size, shuffle=True)

Importing this package imports neither mpi4py nor CuPy: ``init`` does.
"""
from .comm import MPICommunicator, NCCLCommunicator, SingleProcess
from .data_parallel import DataParallel, GradientAllreduce, broadcast_state
from .launch import RanksDisagree, abort_on_error, check_same_run, for_device, init, world_size
from .metrics import evaluate_sharded, reduce_eval, reduce_sums
from .resume import check_world_size, read_checkpoint
from .sampler import ShardedLoader, shard, sharded_loader
from .sync_batchnorm import (SyncBatchNorm2d, sync_batch_norm2d_backward,
                             sync_batch_norm2d_forward)
from .watchdog import SignalWatchdog

__all__ = ["DataParallel", "GradientAllreduce", "MPICommunicator", "NCCLCommunicator",
           "RanksDisagree", "ShardedLoader", "SignalWatchdog", "SingleProcess",
           "SyncBatchNorm2d", "abort_on_error", "broadcast_state", "check_same_run",
           "check_world_size", "evaluate_sharded", "for_device", "init", "read_checkpoint",
           "reduce_eval", "reduce_sums", "shard", "sharded_loader",
           "sync_batch_norm2d_backward", "sync_batch_norm2d_forward", "world_size"]
