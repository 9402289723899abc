"""The settings of a training run, with their defaults and checks.

The defaults train ResNet-18 on the bundled digits (no download) to over 90%
test accuracy in a few minutes on two CPU cores.
"""
import dataclasses
import math
from dataclasses import dataclass

from ..amp import COMPUTE_DTYPES as AMP_DTYPES
from ..backend import SUPPORTED_DTYPES
from ..data import DATASETS
from ..models import MODELS
from ..optim import SCHEDULE_NAMES

OPTIMIZERS = ("sgd", "adam", "adamw")
DEVICES = ("cpu", "gpu")
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}
DEFAULT_IMAGE_SIZE = {"digits": 16}   # other datasets: the loader's default, 32


@dataclass
class TrainConfig:
    """Everything that decides what a run computes.

    Attributes
    ----------
    model : str
        A name of :data:`resnet_np.models.MODELS`.
    dataset : {"digits", "cifar10", "cifar100", "folder"}
    data_dir : str, optional
        Where CIFAR or the image folder lies (see :func:`resnet_np.data.load_dataset`).
    image_size : int, optional
        Side of the square images. When None: 16 for digits (8x8 scans hold no
        more detail at 32, which trains three times slower), else 32.
    epochs, batch_size : int
    lr : float, optional
        Initial learning rate; 0.05 for SGD and 1e-3 for Adam/AdamW when None.
    momentum, weight_decay : float
        ``momentum`` is SGD's momentum, or Adam's beta1.
    optimizer : {"sgd", "adam", "adamw"}
    schedule : {"step", "multistep", "cosine", "constant"}
        Stepped after every batch over the whole run (see
        :func:`resnet_np.optim.build_schedule`): ``step`` decays every third of
        the run after the warm-up, ``multistep`` at its half and three quarters,
        ``cosine`` anneals to 0 at its end.
    lr_decay_rate : float
        The factor of the step and multistep schedules.
    warmup_epochs : int, optional
        Epochs of linear warm-up from 0.1 x lr before the schedule; when None,
        1 if the run has more than one epoch, else 0.
    label_smoothing : float
    device : {"cpu", "gpu"}
    dtype : {"float32", "float64"}
    seed : int
        Seeds the initial weights, the shuffling and the augmentation.
    cifar_stem : bool, optional
        3x3 stride-1 first convolution and no max-pool; by default chosen for
        images of at most 64 pixels.
    augment : bool
        Random crops (and flips, except for digits) of the training images.
    limit, test_limit : int, optional
        Use only this many training / test images (a seeded random subset).
    sync_bn : bool
        On several processes, batch norm with the statistics of the global
        batch (:class:`~resnet_np.distributed.SyncBatchNorm2d`) rather than of
        each rank's; no effect in one process.
    amp : {None, "float16", "bfloat16"}
        Mixed precision (:mod:`resnet_np.amp`): compute in this dtype, with
        float32 master weights (``dtype`` must be float32), batch norm in
        float32 and dynamic loss scaling. None: everything in ``dtype``.
    loss_scale : float
        The initial loss scale of mixed precision (torch's ``init_scale``);
        halved after a step whose gradients overflow, doubled after 2000
        clean steps in a row.
    """

    model: str = "resnet18"
    dataset: str = "digits"
    data_dir: str = None
    image_size: int = None
    epochs: int = 4
    batch_size: int = 64
    lr: float = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    schedule: str = "cosine"
    lr_decay_rate: float = 0.1
    warmup_epochs: int = None
    label_smoothing: float = 0.0
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    cifar_stem: bool = None
    augment: bool = True
    limit: int = None
    test_limit: int = None
    sync_bn: bool = False
    amp: str = None
    loss_scale: float = 2.0 ** 16

    def __post_init__(self):
        if self.image_size is None:
            self.image_size = DEFAULT_IMAGE_SIZE.get(self.dataset)
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.optimizer, 0.05)
        if self.warmup_epochs is None:
            self.warmup_epochs = 1 if isinstance(self.epochs, int) and self.epochs > 1 else 0

    def validate(self):
        """Raise a ValueError naming the first invalid setting."""
        _choice("model", self.model, tuple(MODELS))
        _choice("dataset", self.dataset, DATASETS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULE_NAMES)
        _choice("device", self.device, DEVICES)
        _choice("dtype", self.dtype, SUPPORTED_DTYPES)
        for name in ("epochs", "batch_size"):
            _positive_int(name, getattr(self, name))
        for name in ("image_size", "limit", "test_limit"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if not (isinstance(self.warmup_epochs, int) and 0 <= self.warmup_epochs < self.epochs):
            raise ValueError(f"warmup_epochs must be an integer in [0, epochs={self.epochs}), "
                             f"got {self.warmup_epochs!r}")
        _finite("lr", self.lr, low=0, strict=True)
        for name in ("momentum", "weight_decay", "lr_decay_rate"):
            _finite(name, getattr(self, name), low=0)
        _finite("label_smoothing", self.label_smoothing, low=0, high=1)
        if self.amp is not None:
            _choice("amp", self.amp, AMP_DTYPES)
            if self.dtype != "float32":
                raise ValueError(f"--amp keeps float32 master weights and cannot be combined "
                                 f"with --dtype {self.dtype}; use --dtype float32 (the default)")
        _finite("loss_scale", self.loss_scale, low=0, strict=True)
        if not self.momentum < 1:
            what = "SGD's momentum" if self.optimizer == "sgd" else "Adam's beta1"
            raise ValueError(f"momentum is {what} and must be in [0, 1) (at 1 or more the "
                             f"steps grow without bound), got {self.momentum}")
        return self

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """A config from a dict, ignoring keys it does not know (such as num_classes)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def _choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}: choose one of {', '.join(choices)}")


def _positive_int(name, value):
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _finite(name, value, low=None, high=None, strict=False):
    """Check that ``value`` is a finite number in [low, high] (or (low, high] if strict)."""
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (low is None or (value > low if strict else value >= low))
    ok = ok and (high is None or value <= high)
    if not ok:
        bound = (f" > {low}" if strict else f" >= {low}") if low is not None else ""
        bound += f" and <= {high}" if high is not None else ""
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
