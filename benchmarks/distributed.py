"""Step time and the share of it spent in communication, for 1, 2, ... ranks.

    python benchmarks/distributed.py --ranks 1,2 --model resnet18 --batch-size 32
    python benchmarks/distributed.py --ranks 1,2,4 --device gpu        # NCCL, one GPU a rank

Each count of ranks is a job of its own, ``mpiexec -n N`` this script with
``--worker``, one BLAS thread per rank (so N ranks use N cores). Every rank
trains the model on random images of ``--batch-size`` (per rank) for
``--steps`` timed SGD steps after ``--warmup``, once with the gradient
allreduce overlapped with the backward pass and once after it. Reported:

    step_s        the median step (forward, backward, allreduce, update)
    comm_s        the median time blocked in the allreduce (GradientAllreduce.finish)
    comm_share    comm_s / step_s
    images_per_s  ranks x batch / step_s
    bytes         gradient bytes reduced per step (the whole model, every step)

With overlap, comm_s is only what the backward pass did not hide.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ranks", default="1,2", help="counts of ranks to compare (default: 1,2)")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch-size", type=int, default=32, help="per rank (default: 32)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--bucket-mb", type=float, default=25.0)
    p.add_argument("--out", help="also write the results as JSON here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(args):
    """One rank's measurements; rank 0 prints them as one JSON line."""
    for name in THREAD_VARIABLES:   # before NumPy is imported
        os.environ.setdefault(name, "1")
    sys.path.insert(0, ROOT)
    import numpy as np

    from resnet_np import backend, distributed
    from resnet_np.models import build_model
    from resnet_np.nn import CrossEntropyLoss
    from resnet_np.optim import SGD
    comm = distributed.init(args.device) if distributed.world_size() > 1 \
        else distributed.SingleProcess()
    results = []
    for overlap in (True, False):
        model = build_model(args.model, num_classes=10, cifar_stem=args.image_size <= 64,
                            dtype=args.dtype).to(args.device)
        parallel = distributed.DataParallel(model, comm, bucket_mb=args.bucket_mb,
                                            overlap=overlap)
        optimizer, criterion = SGD(model.parameters(), lr=0.01, momentum=0.9), CrossEntropyLoss()
        rng = np.random.default_rng(comm.rank)
        x = backend.to_device(rng.standard_normal(
            (args.batch_size, 3, args.image_size, args.image_size)).astype(args.dtype),
            args.device)
        y = backend.to_device(rng.integers(0, 10, args.batch_size), args.device)
        steps, comms = [], []
        for step in range(args.warmup + args.steps):
            _synchronize(args.device)
            waited, tick = parallel.gradients.seconds, time.perf_counter()
            criterion(parallel(x), y)
            optimizer.zero_grad()
            parallel.backward(criterion.backward(), input_grad=False)
            optimizer.step()
            _synchronize(args.device)
            if step >= args.warmup:
                steps.append(time.perf_counter() - tick)
                comms.append(parallel.gradients.seconds - waited)
        # The slowest rank sets the pace: take every rank's medians, keep the largest.
        step_s, comm_s = (max(comm.allgather_object(float(np.median(v)))) for v in (steps, comms))
        results.append({"ranks": comm.size, "overlap": overlap, "model": args.model,
                        "device": args.device, "batch_per_rank": args.batch_size,
                        "image_size": args.image_size, "dtype": args.dtype,
                        "buckets": len(parallel.gradients.buckets),
                        "bytes": parallel.gradients.nbytes, "step_s": step_s, "comm_s": comm_s,
                        "comm_share": comm_s / step_s,
                        "images_per_s": comm.size * args.batch_size / step_s})
        if comm.size == 1:
            break   # nothing to overlap
    if comm.rank == 0:
        print(json.dumps(results), flush=True)


def _synchronize(device):
    if device == "gpu":
        import cupy
        cupy.cuda.get_current_stream().synchronize()


def drive(args, argv):
    """Start one job per count of ranks and print the table."""
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        raise SystemExit("no mpiexec on PATH: pip install 'resnet-np[mpi]'")
    env = {**os.environ, **{name: "1" for name in THREAD_VARIABLES}}
    rows = []
    for n in [int(r) for r in args.ranks.split(",")]:
        command = [mpiexec, "-n", str(n), sys.executable, os.path.abspath(__file__),
                   "--worker", *argv]
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{proc.stdout}{proc.stderr}")
        rows += json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{'ranks':>5} {'overlap':>7} {'step s':>8} {'comm s':>8} {'comm %':>7} "
          f"{'img/s':>8} {'MB/step':>8}")
    for r in rows:
        print(f"{r['ranks']:>5} {str(r['overlap'] and r['ranks'] > 1):>7} {r['step_s']:8.3f} "
              f"{r['comm_s']:8.3f} {100 * r['comm_share']:6.1f}% {r['images_per_s']:8.1f} "
              f"{r['bytes'] / 1e6:8.1f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.worker:
        worker(args)
    else:
        drive(args, [a for a in argv if a != "--worker"])


if __name__ == "__main__":
    main()
