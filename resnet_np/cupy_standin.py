"""A strict stand-in for CuPy, built on NumPy: the GPU code paths run, and are checked,
on a machine without a GPU.

    RESNET_NP_CUPY_STANDIN=1 python -m pytest -m gpu
    RESNET_NP_CUPY_STANDIN=1 resnet-np train --device gpu

With the variable set, :mod:`resnet_np.backend` takes this module as its ``cupy``:
``gpu_available()`` is true and every layer, kernel launch and training step that
would run on a GPU runs here, on the CPU. Its arrays follow CuPy's rules, so that
what would fail on a GPU fails here too:

    not an np.ndarray    ``ndarray`` wraps a NumPy array; ``isinstance(a, np.ndarray)``
                         is False, as for a CuPy array
    no implicit host     ``np.asarray(a)``, ``a.__array__()``, an operation mixing it with a
    copies               NumPy array, and a NumPy function that CuPy does not implement
                         (through ``__array_function__``) raise TypeError; ``a.get()`` and
                         ``asnumpy(a)`` are the explicit ways to the host
    0-d results          reductions and scalar indexing return 0-d arrays, not Python
                         numbers
    host syncs counted   ``bool()``, ``float()``, ``int()``, ``.item()``, ``.tolist()``,
                         ``.get()``, ``asnumpy``, printing, boolean-mask indexing and
                         ``synchronize()`` each add a :class:`Sync` to ``record.syncs``,
                         with the line of the package that asked for it
    matrix products      every ``matmul``/``dot``/``tensordot``/``einsum`` adds a
    recorded             :class:`Product` to ``record.products``: operand shapes and dtypes,
                         and the cuBLAS route CuPy takes (a 2-D GEMM honours
                         ``_core.set_compute_type``, a batched (3-D) one computes in its
                         data type and copies float16 operands to float32). TF32 is
                         applied as cuBLAS does (each float32 input rounded to a 10-bit
                         mantissa) on the 2-D route only; float16 products accumulate in
                         float32.
    kernels              ``RawModule``/``RawKernel`` run the package's own ``.cu`` files on
                         the g++ emulation of :mod:`resnet_np.kernels.host`: the name
                         expressions must have been declared, and each argument's width
                         must match the kernel parameter's C type (an ``np.int64`` for an
                         ``int`` is an error, as it would read garbage on a GPU)
    streams, events      no-ops that record (``record.events``)

What it proves: the plumbing (every array stays on the "device", no hidden host
copies or syncs, the kernels' index arithmetic and launch arguments). What it
cannot: cuBLAS's and cuDNN's own behaviour and numerics beyond the rules above,
memory limits, and speed.

Tests read and reset the record: ``record.clear()``, ``len(record.syncs)``,
``record.products``, ``record.compute_types``, ``record.launches``.
"""
import builtins
import os
import re
import sys
import time
import types
import weakref
from typing import NamedTuple

import numpy as np

ENV_VAR = "RESNET_NP_CUPY_STANDIN"
__version__ = f"stand-in {np.__version__} (NumPy on the CPU)"


def requested():
    """Whether ``RESNET_NP_CUPY_STANDIN`` asks for the stand-in (1/true/on/yes)."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in ("", "0", "false", "off", "no"):
        return False
    if value in ("1", "true", "on", "yes"):
        return True
    raise ValueError(f"{ENV_VAR}={os.environ[ENV_VAR]!r}: expected 1 (use the CuPy stand-in) "
                     "or 0")


# --------------------------------------------------------------------------- #
# The record: host syncs, matrix products, kernel launches, stream events
# --------------------------------------------------------------------------- #
class Sync(NamedTuple):
    kind: str            # "bool", "float", "int", "item", "get", "asnumpy", ...
    where: str           # file:line of the first caller outside this module


class Product(NamedTuple):
    op: str              # "matmul", "dot", "tensordot", "einsum"
    shapes: tuple        # the operands' shapes
    dtypes: tuple        # the operands' dtype names
    route: str           # "gemm" (2-D, honours the compute type) or "batched"
    compute: str         # "float32", "tf32", "float64", "float16 (float32 accumulation)", ...
    where: str


class Record:
    """What the stand-in saw since the last :meth:`clear`."""

    def __init__(self):
        self.syncs, self.products, self.launches = [], [], []
        self.events, self.compute_types, self.transfers = [], [], []

    def clear(self):
        for name in ("syncs", "products", "launches", "events", "compute_types", "transfers"):
            getattr(self, name).clear()


record = Record()
# the first caller outside these files is the line that asked (backend.py is plumbing)
_PLUMBING = {os.path.abspath(__file__),
             os.path.join(os.path.dirname(os.path.abspath(__file__)), "backend.py")}


def _caller():
    frame = sys._getframe(2)
    while frame is not None and os.path.abspath(frame.f_code.co_filename) in _PLUMBING:
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{os.path.relpath(frame.f_code.co_filename)}:{frame.f_lineno}"


def _sync(kind):
    record.syncs.append(Sync(kind, _caller()))


def host_syncs():
    """The number of host syncs since the last ``record.clear()``."""
    return len(record.syncs)


# --------------------------------------------------------------------------- #
# The memory pool: bytes held by live arrays
# --------------------------------------------------------------------------- #
class MemoryPointer(NamedTuple):
    ptr: int
    size: int


class MemoryPool:
    def __init__(self):
        self._used, self._total, self._limit = 0, 0, 0

    def malloc(self, size):
        self._used += size
        self._total = builtins.max(self._total, self._used)
        return MemoryPointer(0, size)

    def _free(self, size):
        self._used -= size

    def used_bytes(self):
        return self._used

    def total_bytes(self):
        return self._total

    def free_bytes(self):
        return self._total - self._used

    def free_all_blocks(self):
        self._total = self._used

    def n_free_blocks(self):
        return 0

    def set_limit(self, size=None, fraction=None):
        self._limit = size or 0

    def get_limit(self):
        return self._limit


_pool = MemoryPool()
_allocator = [_pool.malloc]


def get_default_memory_pool():
    return _pool


def get_default_pinned_memory_pool():
    return MemoryPool()


# --------------------------------------------------------------------------- #
# The array
# --------------------------------------------------------------------------- #
_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
             "construct a NumPy array explicitly.")


def _wrap(value):
    """NumPy results -> stand-in arrays (NumPy scalars become 0-d arrays, as in CuPy)."""
    if isinstance(value, np.ndarray):
        a = object.__new__(ndarray)
        a._a = value
        if value.base is None and value.nbytes:           # a new buffer: count it in the pool
            _allocator[0](value.nbytes)
            weakref.finalize(value, _pool._free, value.nbytes)
        return a
    if isinstance(value, np.generic):
        return _wrap(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _operand(value, what="operand"):
    """A stand-in array -> its NumPy array; Python and NumPy scalars pass; a NumPy array
    (or anything else array-like) is the TypeError CuPy raises."""
    if isinstance(value, ndarray):
        return value._a
    if value is None or isinstance(value, (builtins.bool, int, float, complex, np.generic,
                                           np.dtype, str, slice, type(Ellipsis))):
        return value
    if isinstance(value, type):                           # a dtype: float, np.float32, ...
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(_operand(v, what) for v in value)
    raise TypeError(f"Unsupported type {type(value)}: a CuPy {what} must be a CuPy array or a "
                    "scalar (move NumPy data to the device with cupy.asarray first)")


def _operands(args, kwargs):
    return ([_operand(a) for a in args],
            {k: _operand(v) for k, v in kwargs.items()})


class ndarray:
    """A device array: a NumPy array that refuses to leave the device implicitly."""

    __slots__ = ("_a", "__weakref__")
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        fresh = _wrap(np.empty(shape, dtype=dtype, order=order))
        self._a = fresh._a

    # -- attributes ----------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: _wrap(self._a.T))
    data = property(lambda self: MemoryPointer(self._a.ctypes.data, self._a.nbytes))
    device = property(lambda self: Device())

    @property
    def base(self):
        return None if self._a.base is None else _wrap(self._a.base)

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    # -- the explicit ways to the host, each a sync ------------------------------
    def get(self, stream=None, order="C", out=None, _kind="get"):
        _sync(_kind)
        if out is not None:
            out[...] = self._a
            return out
        return np.array(self._a, order=order)

    def item(self):
        _sync("item")
        return self._a.item()

    def tolist(self):
        _sync("tolist")
        return self._a.tolist()

    def set(self, arr, stream=None):
        record.transfers.append(("host to device", _caller()))
        self._a[...] = np.asarray(arr)

    def _scalar(self, kind, convert):
        if self._a.size != 1:
            raise TypeError(f"only size-1 arrays can be converted to Python scalars "
                            f"({kind} of an array of shape {self.shape})")
        _sync(kind)
        return convert(self._a.reshape(()).item())

    def __bool__(self):
        if self._a.size != 1:
            raise ValueError("The truth value of an array with more than one element is "
                             "ambiguous. Use a.any() or a.all()")
        return self._scalar("bool", builtins.bool)

    def __float__(self):
        return self._scalar("float", float)

    def __int__(self):
        return self._scalar("int", int)

    def __complex__(self):
        return self._scalar("complex", complex)

    def __index__(self):
        if self._a.dtype.kind not in "iub":
            raise TypeError("only integer scalar arrays can be converted to a scalar index")
        return self._scalar("index", int)

    def __format__(self, spec):
        _sync("format")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __repr__(self):
        _sync("repr")
        return repr(self._a).replace("array(", "array(", 1)

    def __str__(self):
        _sync("str")
        return str(self._a)

    def __reduce__(self):
        _sync("pickle")
        return _from_host, (np.array(self._a),)

    # -- no implicit conversion ------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if "out" in kwargs:
            kwargs["out"] = tuple(_operand(o, "output") for o in kwargs["out"])
        inputs = [_operand(x) for x in inputs]
        return _wrap(getattr(ufunc, method)(*inputs, **kwargs))

    def __array_function__(self, func, types, args, kwargs):
        standin = _implementation_of(func)
        if standin is None:                  # CuPy does not implement it: numpy raises
            return NotImplemented
        return standin(*args, **kwargs)

    # -- shape and size ------------------------------------------------------
    def __len__(self):
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    def __getitem__(self, key):
        key = _index(key)
        return _wrap(self._a[key])

    def __setitem__(self, key, value):
        key = _index(key)
        if isinstance(value, np.ndarray):    # CuPy copies host data to the device here
            record.transfers.append(("host to device", _caller()))
        else:
            value = _operand(value, "value")
        self._a[key] = value

    def __copy__(self):
        return _wrap(self._a.copy())

    def __deepcopy__(self, memo):
        return _wrap(self._a.copy())

    def __matmul__(self, other):
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)

    def __imatmul__(self, other):
        return matmul(self, other, out=self)


def _from_host(array):
    return _wrap(array)


def _index(key):
    """An index of a stand-in array: stand-in index arrays are unwrapped (a boolean mask
    is a host sync in CuPy: the result's size must be read back); NumPy index arrays and
    lists are copied to the device as CuPy does."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, ndarray):
        if key.dtype == np.bool_:
            _sync("boolean index")
        return key._a
    return key


def _delegate(name, sync=None):
    def method(self, *args, **kwargs):
        if sync:
            _sync(sync)
        args, kwargs = _operands(args, kwargs)
        return _wrap(getattr(self._a, name)(*args, **kwargs))
    method.__name__ = name
    return method


for _name in ("reshape", "transpose", "swapaxes", "astype", "copy", "ravel", "flatten",
              "squeeze", "sum", "mean", "max", "min", "argmax", "argmin", "any", "all", "prod",
              "var", "std", "cumsum", "clip", "fill", "view", "repeat", "take", "round",
              "conj", "sort", "argsort", "diagonal", "trace", "dot", "put", "choose",
              "compress", "nonzero"):
    setattr(ndarray, _name, _delegate(_name, sync="nonzero" if _name == "nonzero" else None))

# arithmetic and comparisons: the ufunc of each operator, reflected and in place too
_OPERATORS = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.true_divide,
    "floordiv": np.floor_divide, "mod": np.remainder, "pow": np.power, "and": np.bitwise_and,
    "or": np.bitwise_or, "xor": np.bitwise_xor, "lshift": np.left_shift,
    "rshift": np.right_shift,
}


def _binary(ufunc, reflected=False, inplace=False):
    if inplace:
        def method(self, other):
            ufunc(self._a, _operand(other), out=self._a)
            return self
    elif reflected:
        def method(self, other):
            return _wrap(ufunc(_operand(other), self._a))
    else:
        def method(self, other):
            return _wrap(ufunc(self._a, _operand(other)))
    return method


for _name, _ufunc in _OPERATORS.items():
    setattr(ndarray, f"__{_name}__", _binary(_ufunc))
    setattr(ndarray, f"__r{_name}__", _binary(_ufunc, reflected=True))
    setattr(ndarray, f"__i{_name}__", _binary(_ufunc, inplace=True))
for _name, _ufunc in (("eq", np.equal), ("ne", np.not_equal), ("lt", np.less),
                      ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal)):
    setattr(ndarray, f"__{_name}__", _binary(_ufunc))
for _name, _ufunc in (("neg", np.negative), ("pos", np.positive), ("abs", np.absolute),
                      ("invert", np.invert)):
    setattr(ndarray, f"__{_name}__", lambda self, _u=_ufunc: _wrap(_u(self._a)))


# --------------------------------------------------------------------------- #
# Functions: NumPy's, on device arrays only
# --------------------------------------------------------------------------- #
def _lift(func, name=None, sync=None):
    """``func`` on stand-in arrays: NumPy arrays among the arguments are a TypeError."""
    def standin(*args, **kwargs):
        if sync:
            _sync(sync)
        args, kwargs = _operands(args, kwargs)
        return _wrap(func(*args, **kwargs))
    standin.__name__ = name or func.__name__
    standin.__doc__ = f"numpy.{standin.__name__} on CuPy (stand-in) arrays."
    return standin


# the NumPy functions CuPy has, under the same names (a NumPy function not here is a
# TypeError on a stand-in array, as on a CuPy array)
_FUNCTIONS = """
abs absolute add subtract multiply divide true_divide floor_divide remainder mod power
negative positive reciprocal exp exp2 expm1 log log2 log10 log1p sqrt square cbrt sign
sin cos tan tanh arctan sinh cosh floor ceil rint trunc round around fix maximum minimum
fmax fmin clip where isnan isinf isfinite signbit copysign equal not_equal greater
greater_equal less less_equal logical_and logical_or logical_not logical_xor bitwise_and
bitwise_or bitwise_xor invert sum mean max amax min amin argmax argmin prod var std
cumsum cumprod any all nansum nanmax nanmin average median count_nonzero outer kron
concatenate stack vstack hstack dstack split array_split reshape transpose swapaxes
moveaxis rollaxis expand_dims squeeze broadcast_to broadcast_arrays atleast_1d atleast_2d
atleast_3d ravel pad zeros_like ones_like empty_like full_like take take_along_axis
put_along_axis repeat tile flip fliplr flipud roll rot90 sort argsort partition
argpartition searchsorted diag diagonal trace tril triu isclose allclose array_equal
clip cross histogram bincount digitize linspace logspace arange zeros ones empty full eye
identity tri meshgrid indices result_type can_cast shape ndim size copy
""".split()

_namespace = globals()
for _name in _FUNCTIONS:
    if _name not in _namespace and hasattr(np, _name):
        _namespace[_name] = _lift(getattr(np, _name), _name)
for _name in ("nonzero", "argwhere", "flatnonzero", "unique"):   # the result's size: a sync
    _namespace[_name] = _lift(getattr(np, _name), _name, sync=_name)

for _name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
              "uint16", "uint32", "uint64", "bool_", "complex64", "complex128", "intp",
              "dtype", "finfo", "iinfo", "integer", "floating", "number", "generic",
              "issubdtype", "promote_types", "inf", "nan", "pi", "e", "newaxis",
              "errstate", "ufunc"):
    _namespace[_name] = getattr(np, _name)
float_, int_ = np.float64, np.int64


def asarray(a, dtype=None, order=None):
    """Device arrays pass (cast to ``dtype``); host data is copied to the device."""
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    record.transfers.append(("host to device", _caller()))
    return _wrap(np.array(a, dtype=dtype, order=order or "K"))


def array(obj, dtype=None, copy=True, order="K", ndmin=0):
    if isinstance(obj, ndarray):
        return _wrap(np.array(obj._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin))
    record.transfers.append(("host to device", _caller()))
    return _wrap(np.array(obj, dtype=dtype, order=order, ndmin=ndmin))


def ascontiguousarray(a, dtype=None):
    return _wrap(np.ascontiguousarray(_operand(a), dtype=dtype))


def asfortranarray(a, dtype=None):
    return _wrap(np.asfortranarray(_operand(a), dtype=dtype))


def copyto(dst, src, casting="same_kind", where=True):
    np.copyto(_operand(dst, "output"), _operand(src), casting=casting, where=_operand(where))


def asnumpy(a, stream=None, order="C", out=None):
    """The explicit copy to the host (a sync for a device array)."""
    if isinstance(a, ndarray):
        return a.get(stream, order, out, _kind="asnumpy")
    return np.asarray(a, order=order)


def get_array_module(*args):
    return _module if builtins.any(isinstance(a, ndarray) for a in args) else np


# --------------------------------------------------------------------------- #
# Matrix products, with the route cuBLAS takes
# --------------------------------------------------------------------------- #
_COMPUTE = {np.dtype(np.float32): "float32"}        # set_compute_type's setting, per dtype


def _tf32(a):
    """Round float32 values to TF32 (10-bit mantissa, nearest), as tensor cores read them."""
    bits = np.ascontiguousarray(a).view(np.uint32)
    rounded = (bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)
    return rounded.view(np.float32)


def _product(op, operands, compute_fn):
    """Run ``compute_fn`` on NumPy operands as cuBLAS would and record the product."""
    arrays = [_operand(x) for x in operands]
    batched = op == "matmul" and builtins.max(a.ndim for a in arrays) > 2
    dtype = np.result_type(*arrays)
    if dtype == np.float16:            # both routes accumulate in float32; the batched one
        compute = ("float32 (float16 widened by a copy)" if batched   # copies its operands
                   else "float16 (float32 accumulation)")
        result = compute_fn(*[a.astype(np.float32) for a in arrays]).astype(np.float16)
    elif dtype == np.float32 and not batched and _COMPUTE[dtype] == "tf32":
        compute = "tf32"
        result = compute_fn(*[_tf32(a.astype(np.float32, copy=False)) for a in arrays])
    else:
        compute = dtype.name
        result = compute_fn(*arrays)
    record.products.append(Product(op, tuple(a.shape for a in arrays),
                                   tuple(a.dtype.name for a in arrays),
                                   "batched" if batched else "gemm", compute, _caller()))
    return result


def _matmul(a, b):
    """np.matmul, in the orientation OpenBLAS runs fast (see backend.matmul)."""
    if a.ndim >= 2 and b.ndim >= 2 and a.shape[-2] < b.shape[-1]:
        return np.matmul(b.swapaxes(-1, -2), a.swapaxes(-1, -2)).swapaxes(-1, -2)
    return np.matmul(a, b)


def matmul(a, b, out=None):
    result = _product("matmul", (a, b), _matmul)
    if out is not None:
        _operand(out, "output")[...] = result
        return out
    return _wrap(result)


def dot(a, b, out=None):
    result = _product("dot", (a, b), np.dot)
    if out is not None:
        _operand(out, "output")[...] = result
        return out
    return _wrap(result)


def tensordot(a, b, axes=2):
    return _wrap(_product("tensordot", (a, b), lambda x, y: np.tensordot(x, y, axes)))


def einsum(subscripts, *operands, **kwargs):
    kwargs.pop("optimize", None)
    return _wrap(_product("einsum", operands,
                          lambda *xs: np.einsum(subscripts, *xs, optimize=True, **kwargs)))


# --------------------------------------------------------------------------- #
# Sub-modules: lib, linalg, random, testing, _core, cuda
# --------------------------------------------------------------------------- #
def _submodule(name, **members):
    module = types.ModuleType(f"{__name__}.{name}")
    module.__dict__.update(members)
    return module


lib = _submodule("lib", stride_tricks=_submodule(
    "lib.stride_tricks",
    as_strided=lambda x, shape=None, strides=None: _wrap(
        np.lib.stride_tricks.as_strided(_operand(x), shape, strides))))
linalg = _submodule("linalg", norm=_lift(np.linalg.norm, "norm"))


class Generator:
    """cupy.random.Generator: NumPy's generator, its draws on the device."""

    def __init__(self, seed=None):
        self._rng = np.random.default_rng(seed)

    def __getattr__(self, name):
        draw = getattr(self._rng, name)
        return lambda *args, **kwargs: _wrap(np.asarray(draw(*args, **kwargs)))


_global_rng = [Generator(0)]
random = _submodule(
    "random", default_rng=Generator, Generator=Generator,
    seed=lambda seed=None: _global_rng.__setitem__(0, Generator(seed)),
    **{name: (lambda _n: lambda *a, **k: getattr(_global_rng[0], _n)(*a, **k))(name)
       for name in ("standard_normal", "normal", "uniform", "random", "integers", "choice",
                    "permutation")},
    rand=lambda *shape: _global_rng[0].random(shape),
    randn=lambda *shape: _global_rng[0].standard_normal(shape),
    randint=lambda low, high=None, size=None, dtype=int: _global_rng[0].integers(
        low, high, size, dtype=dtype))


def _to_host_for_testing(x):
    if isinstance(x, ndarray):
        return x.get()
    return x


testing = _submodule(
    "testing",
    assert_allclose=lambda actual, desired, *a, **k: np.testing.assert_allclose(
        _to_host_for_testing(actual), _to_host_for_testing(desired), *a, **k),
    assert_array_equal=lambda x, y, *a, **k: np.testing.assert_array_equal(
        _to_host_for_testing(x), _to_host_for_testing(y), *a, **k))


def _set_compute_type(dtype, compute_type):
    dtype = np.dtype(dtype)
    if dtype != np.float32:
        raise ValueError(f"set_compute_type: only float32 has a choice of compute type, got "
                         f"{dtype}")
    name = {1: "float32", 7: "tf32"}.get(compute_type)
    if name is None:
        raise ValueError(f"set_compute_type: unknown compute type {compute_type!r}")
    _COMPUTE[dtype] = name
    record.compute_types.append((dtype.name, name))


_core = _submodule(
    "_core", set_compute_type=_set_compute_type, ndarray=ndarray,
    _routines_linalg=_submodule("_core._routines_linalg", COMPUTE_TYPE_DEFAULT=1,
                                COMPUTE_TYPE_TF32=7))


def fuse(*args, **kwargs):
    """cupy.fuse: here the Python function itself, on stand-in arrays."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda function: function


# -- cuda: the device, streams and events, kernels ---------------------------------
class Device:
    """The one "device"; ``synchronize()`` is a host sync."""

    compute_capability = "90"

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise ValueError(f"the CuPy stand-in has one device (0), got {device!r}")

    def synchronize(self):
        _sync("device synchronize")

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @property
    def mem_info(self):
        total = 16 << 30
        return total - _pool.used_bytes(), total


class Event:
    """Records the time it was recorded at; ``synchronize()`` is a host sync."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.time = None

    def record(self, stream=None):
        self.time = time.perf_counter()
        record.events.append(("event record", _caller()))

    def synchronize(self):
        _sync("event synchronize")

    @property
    def done(self):
        return True


class Stream:
    """A no-op stream: work runs at once; entering it makes it the current stream."""

    _current = []

    def __init__(self, null=False, non_blocking=False, ptds=False):
        self.ptr = 0 if null else id(self)
        record.events.append(("stream", _caller()))

    def __enter__(self):
        Stream._current.append(self)
        return self

    def __exit__(self, *exc):
        Stream._current.pop()
        return False

    def use(self):
        Stream._current[:] = [self]
        return self

    def synchronize(self):
        _sync("stream synchronize")

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event):
        record.events.append(("wait event", _caller()))

    @property
    def done(self):
        return True


Stream.null = Stream(null=True)
record.events.clear()


def _current_stream():
    return Stream._current[-1] if Stream._current else Stream.null


def _elapsed_time(start, end):
    return (end.time - start.time) * 1000.0


_PROPERTIES = {"name": b"CuPy stand-in (NumPy on the CPU)", "totalGlobalMem": 16 << 30,
               "multiProcessorCount": 1, "major": 9, "minor": 0, "warpSize": 32,
               "maxThreadsPerBlock": 1024, "sharedMemPerBlock": 48 << 10}


def _set_allocator(allocator=None):
    _allocator[0] = allocator or _pool.malloc


# -- RawModule / RawKernel on the g++ emulation ---------------------------------
_PARAMETER = re.compile(r"__global__\s+void\s+(\w+)\s*\(([^)]*)\)", re.S)
_NAME_EXPRESSION = re.compile(r"^\s*(\w+)\s*<\s*(float|double)\s*,\s*(int|long long)\s*>\s*$")
_C_DTYPES = {"float": np.float32, "double": np.float64, "int": np.int32,
             "long long": np.int64, "unsigned long long": np.uint64}
_host_launcher = []


def _signatures(code):
    """kernel name -> its parameters' C types, T and I unresolved ('const T*' -> 'T*')."""
    result = {}
    for name, parameters in _PARAMETER.findall(code):
        types_ = []
        for parameter in parameters.split(","):
            words = [w for w in parameter.replace("*", " * ").split()
                     if w not in ("const", "__restrict__")][:-1]     # drop the name
            types_.append(" ".join(words).replace(" *", "*"))
        result[name] = types_
    return result


def _launcher():
    """The one host emulation of the kernels (built by g++ on first use)."""
    if not _host_launcher:
        from .kernels.host import HostLauncher
        _host_launcher.append(HostLauncher())
    return _host_launcher[0]


def cannot_emulate(kernel):
    """None if the g++ emulation runs ``kernel``, else why not (no C++ compiler, or a
    kernel with barriers that the emulation lacks)."""
    from .kernels import _sources, host
    if host.host_compiler() is None:
        return "no C++ compiler (g++ or $CXX) for the kernels' host emulation"
    try:
        found = hasattr(_launcher()._lib, host._symbol(kernel, "float", "int"))
    except (AttributeError, TypeError):
        found = kernel not in getattr(_sources, "WITH_BARRIERS", ())
    return None if found else f"{kernel} has barriers, which the host emulation lacks"


def emulates(kernel):
    """Whether the g++ emulation can run ``kernel``."""
    return cannot_emulate(kernel) is None


class RawKernel:
    """One instance of a template kernel, launched on the host emulation."""

    def __init__(self, name_expression, parameters):
        kernel, c_type, index = _NAME_EXPRESSION.match(name_expression).groups()
        self.name, self.kernel = name_expression, kernel
        self.dtype = np.dtype(_C_DTYPES[c_type])
        self.index = index
        self.parameters = [p.replace("T", c_type) if p.startswith("T") else
                           p.replace("I", index) if p == "I" else p for p in parameters]

    def _argument(self, position, value, c_type):
        what = f"{self.name}: argument {position} ({c_type})"
        if c_type.endswith("*"):
            if isinstance(value, np.uint64) and value == 0:
                return None                                      # a null pointer
            if not isinstance(value, ndarray):
                raise TypeError(f"{what}: expected a device array, got {type(value).__name__}")
            expected = np.dtype(_C_DTYPES[c_type[:-1].strip()])
            if value.dtype != expected:
                raise TypeError(f"{what}: the array is {value.dtype}, the kernel reads "
                                f"{expected}")
            return value._a
        expected = np.dtype(_C_DTYPES[c_type])
        if not isinstance(value, np.generic) or value.dtype != expected:
            got = value.dtype if isinstance(value, np.generic) else type(value).__name__
            raise TypeError(f"{what}: passed {got}, the kernel reads {expected} ("
                            f"{expected.itemsize} bytes)")
        return value.item()

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        if len(args) != len(self.parameters):
            raise TypeError(f"{self.name}: {len(args)} arguments for {len(self.parameters)} "
                            "parameters")
        values = [self._argument(i, v, t) for i, (v, t) in
                  enumerate(zip(args, self.parameters))]
        grid, block = tuple(grid), tuple(block)
        if builtins.any(d != 1 for d in grid[2:] + block[2:]):
            raise ValueError(f"{self.name}: the emulation launches 1-D and 2-D grids only")
        record.launches.append((self.name, grid, block, _caller()))
        _launcher().launch(self.kernel, self.dtype, grid[:2], block[:2], values, self.index)


class RawModule:
    """cupy.RawModule for the package's own CUDA sources: ``get_function`` takes a name
    expression given to the constructor, as NVRTC requires."""

    def __init__(self, code=None, path=None, options=(), backend="nvrtc",
                 translate_cucomplex=False, *, enable_cooperative_groups=False,
                 name_expressions=None, jitify=False):
        from .kernels import _sources
        if code is None or not builtins.any(code == _sources.source_text(f) for f in _sources.KERNELS):
            raise ValueError("the CuPy stand-in runs only resnet_np's own kernels "
                             "(resnet_np/kernels/cuda)")
        self._signatures = _signatures(code)
        self._names = tuple(name_expressions or ())

    def get_function(self, name):
        if name not in self._names:
            raise KeyError(f"{name!r} was not among the module's name_expressions")
        kernel = _NAME_EXPRESSION.match(name)
        if kernel is None or kernel.group(1) not in self._signatures:
            raise KeyError(f"no kernel {name!r} in this module")
        return RawKernel(name, self._signatures[kernel.group(1)])


def ElementwiseKernel(*args, **kwargs):
    raise NotImplementedError("the CuPy stand-in runs no ElementwiseKernel (C code); "
                              "resnet_np uses none")


cuda = _submodule(
    "cuda", Device=Device, Stream=Stream, Event=Event, MemoryPool=MemoryPool,
    MemoryPointer=MemoryPointer, get_current_stream=_current_stream,
    get_elapsed_time=_elapsed_time, set_allocator=_set_allocator,
    set_pinned_memory_allocator=lambda allocator=None: None,
    runtime=_submodule("cuda.runtime", getDeviceCount=lambda: 1,
                       getDeviceProperties=lambda device: dict(_PROPERTIES),
                       runtimeGetVersion=lambda: 12080, driverGetVersion=lambda: 12080,
                       getDevice=lambda: 0),
    is_available=lambda: True)

_module = sys.modules[__name__]


# --------------------------------------------------------------------------- #
# NumPy functions -> the stand-in's, for __array_function__
# --------------------------------------------------------------------------- #
def _implementation_of(func):
    """The stand-in's function for a NumPy function (by name, in its sub-module), or None."""
    name = func.__name__
    module = getattr(func, "__module__", "") or ""
    if module.startswith("numpy.linalg"):
        return getattr(linalg, name, None)
    if module.startswith("numpy.lib.stride_tricks") or name == "as_strided":
        return getattr(lib.stride_tricks, name, None)
    if module.startswith("numpy.random") or module.startswith("numpy.testing"):
        return None
    found = _namespace.get(name)
    return found if callable(found) and not isinstance(found, type) else None
