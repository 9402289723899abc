"""Our float32 gradient error and torchvision's, both against the float64 truth, in train mode.

    python benchmarks/float32_accuracy.py [model] [batch] [size]     (default resnet50 4 112)

The models are those of tests/test_models.py: torchvision's weights, batch norms randomised.
"""
import pathlib
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from test_models import rel_err, run_ours, run_torchvision, torchvision_model  # noqa: E402

torch.set_num_threads(1)

name = sys.argv[1] if len(sys.argv) > 1 else "resnet50"
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 4
size = int(sys.argv[3]) if len(sys.argv) > 3 else 112
gen = np.random.default_rng(0)
x = gen.standard_normal((batch, 3, size, size))
d = gen.standard_normal((batch, 10))
t0 = time.time()
_, truth = run_torchvision(name, "float64", True, x, d)
_, theirs = run_torchvision(name, "float32", True, x, d)
state = {k: v.numpy() for k, v in torchvision_model(name, "float32").state_dict().items()}
ours = run_ours(name, "float32", True, state, x, d)
rows = {}
for k in truth:
    if k.endswith("num_batches_tracked") or "running" in k:
        continue
    rows[k] = (rel_err(ours[k], truth[k]), rel_err(theirs[k], truth[k]))
o = np.array([v[0] for v in rows.values()]); t = np.array([v[1] for v in rows.values()])
r = o / t
worst = max(rows, key=lambda k: rows[k][0] / rows[k][1])
print(f"{name} batch {batch} {size}x{size} train: {len(r)} tensors (logits, input grad, parameter grads)")
print(f"error ours/torch per tensor: median {np.median(r):.3f}, largest {r.max():.3f} ({worst})")
print(f"worst tensor: ours {o.max():.2e} ({list(rows)[o.argmax()]}), torch {t.max():.2e} ({list(rows)[t.argmax()]}), ratio {o.max() / t.max():.3f}")
print(f"median error: ours {np.median(o):.2e} torch {np.median(t):.2e}; {time.time()-t0:.0f} s")
