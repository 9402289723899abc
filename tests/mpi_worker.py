"""Programs that tests/test_distributed.py runs under ``mpiexec -n 2``.

    python tests/mpi_worker.py library OUT.npz [--device gpu]
        A tiny float64 network trained by DataParallel + ShardedLoader, with
        synchronised batch norm (SGD, then AdamW) and with batch norm per rank
        (SGD); rank 0 writes the final states and losses to OUT.npz. On the
        GPU (one per rank) the communicator is NCCL.

    python tests/mpi_worker.py cli [--tiny] [--interrupt-rank R --at-batch K]
                                   [--fail-rank R] [--stall-rank R --at-batch K --marker F]
                                   [--other-data-rank R] -- TRAIN ARGUMENTS
        ``resnet-np`` itself (its main()), optionally with the tiny network and
        random images (no scikit-learn to import) in place of the ResNet and
        the digits, with Ctrl-C sent to rank R after its batch K of the first
        epoch, with rank R failing at its second step, with rank R waiting in
        MPI forever after its batch K (for a message never sent; it creates
        file F first), or with rank R given 40 training images instead of 60.

The single-process references the tests compare against are built from the
same pieces (``tiny_model``, ``tiny_dataset``, ``make_optimizer``) in the test.
"""
import argparse
import os
import signal
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resnet_np import backend, distributed  # noqa: E402
from resnet_np.data import Dataset  # noqa: E402
from resnet_np.data.registry import take  # noqa: E402
from resnet_np.nn import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, CrossEntropyLoss,  # noqa: E402
                          Flatten, Linear, ReLU, Sequential)
from resnet_np.optim import SGD, AdamW  # noqa: E402

BATCH = 4          # per rank; one process uses 2 * BATCH
EPOCHS = 2
SEED = 3
SCENARIOS = {"sync_sgd": (True, "sgd"), "sync_adamw": (True, "adamw"), "local_sgd": (False, "sgd")}


class TinyNet(Sequential):
    """conv-bn-relu, strided conv-bn-relu, global pool, linear: a ResNet stem in miniature."""

    def __init__(self, num_classes=3, dtype="float64"):
        super().__init__(Conv2d(3, 6, 3, padding=1, bias=False, dtype=dtype),
                         BatchNorm2d(6, dtype=dtype), ReLU(),
                         Conv2d(6, 8, 3, stride=2, padding=1, bias=False, dtype=dtype),
                         BatchNorm2d(8, dtype=dtype), ReLU(),
                         AdaptiveAvgPool2d(1), Flatten(), Linear(8, num_classes, dtype=dtype))

    def backward(self, dout, input_grad=True):   # the trainer's call
        return super().backward(dout)


def tiny_model(seed):
    backend.manual_seed(seed)
    return TinyNet()


def tiny_dataset(n=50, size=6, seed=7):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return Dataset(images, rng.integers(0, 3, n).astype(np.int64), ["a", "b", "c"], "tiny")


def use_tiny_network_and_data(trainer_module, setattr=setattr, train_images=60):
    """The trainer builds TinyNet and loads 60 (``train_images``) + 30 random 8x8 images
    of 3 classes."""
    setattr(trainer_module, "model_from_config", lambda config, device="cpu":
            TinyNet(config["num_classes"], config["dtype"]).to(device))
    setattr(trainer_module, "load_dataset", lambda name, data_dir, split, image_size,
            limit=None, seed=0: take(tiny_dataset(train_images if split == "train" else 30, 8,
                                                  seed=int(split == "train")), limit, seed))


def make_optimizer(name, params):
    if name == "sgd":
        return SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3)
    return AdamW(params, lr=0.01, weight_decay=0.05)


def numpy_state(model):
    return {key: np.array(backend.to_numpy(value)) for key, value in model.state_dict().items()}


def run_library(comm, out, device="cpu"):
    results = {}
    for name, (sync_bn, optimizer_name) in SCENARIOS.items():
        model = tiny_model(seed=100 + comm.rank).to(device)   # unequal: the broadcast fixes it
        # Buckets of ~600 bytes: several per step, started during the backward pass.
        parallel = distributed.DataParallel(model, comm, sync_bn=sync_bn, bucket_mb=6e-4,
                                            overlap=name != "sync_adamw")
        assert len(parallel.gradients.buckets) > 2
        optimizer = make_optimizer(optimizer_name, model.parameters())
        loader = distributed.ShardedLoader(tiny_dataset(), BATCH, comm.rank, comm.size,
                                           shuffle=True, seed=SEED, drop_last=True)
        criterion, losses = CrossEntropyLoss(), []
        for _ in range(EPOCHS):
            for x, y in loader:
                x, y = (backend.to_device(a, device) for a in (x.astype(np.float64), y))
                loss = float(criterion(parallel(x), y))
                optimizer.zero_grad()
                parallel.backward(criterion.backward())
                optimizer.step()
                losses.append(comm.allgather_object(loss))   # every rank's loss
        for key, value in numpy_state(model).items():
            results[f"{name}/{key}"] = value
        results[f"{name}/losses"] = np.array(losses)        # (steps, ranks)
    if comm.rank == 0:
        np.savez(out, **results)


def run_cli(args, argv):
    from resnet_np import cli
    from resnet_np.training import trainer as trainer_module
    rank = int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))
    if args.tiny:
        use_tiny_network_and_data(trainer_module,
                                  train_images=40 if args.other_data_rank == rank else 60)
    if args.stall_rank == rank:
        init = trainer_module.Trainer.__init__

        def init_and_stall(self, *a, **kw):
            init(self, *a, **kw)

            def stall(trainer):
                if (trainer.epoch, trainer.batch) == (0, args.at_batch):
                    from mpi4py import MPI
                    open(args.marker, "w").close()
                    MPI.COMM_WORLD.Recv(np.empty(1), source=0, tag=77)   # never sent
            self.on_batch_end = stall
        trainer_module.Trainer.__init__ = init_and_stall
    if args.interrupt_rank == rank:
        init = trainer_module.Trainer.__init__

        def init_with_ctrl_c(self, *a, **kw):
            init(self, *a, **kw)
            self.on_batch_end = lambda t: (os.kill(os.getpid(), signal.SIGINT)
                                           if (t.epoch, t.batch) == (0, args.at_batch) else None)
        trainer_module.Trainer.__init__ = init_with_ctrl_c
    if args.fail_rank == rank:
        step, calls = trainer_module.Trainer._step, []

        def failing_step(self, x, y):
            calls.append(1)
            if len(calls) == 2:
                raise ValueError(f"bad data on rank {rank}: label 12 is not a class")
            return step(self, x, y)
        trainer_module.Trainer._step = failing_step
    return cli.main(argv)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["library", "cli"])
    parser.add_argument("out", nargs="?")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--interrupt-rank", type=int)
    parser.add_argument("--at-batch", type=int, default=1)
    parser.add_argument("--fail-rank", type=int)
    parser.add_argument("--stall-rank", type=int)
    parser.add_argument("--marker")
    parser.add_argument("--other-data-rank", type=int)
    parser.add_argument("--device", default="cpu")
    argv = sys.argv[1:]
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.mode == "library":
        comm = distributed.init(args.device)
        with distributed.abort_on_error(comm, "mpi_worker"):
            run_library(comm, args.out, args.device)
        return 0
    return run_cli(args, rest)


if __name__ == "__main__":
    sys.exit(main())
