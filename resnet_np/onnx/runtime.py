"""Running an exported ONNX file with onnxruntime: the session and the configuration
(image size, mean, std, class names) its metadata records (see :mod:`resnet_np.onnx`).

``onnxruntime`` is optional: ``pip install resnet-np[onnx]``.
"""
import json
from pathlib import Path


def load_session(path, device="cpu"):
    """An onnxruntime session of the file ``path`` and the configuration in its metadata.

    Returns
    -------
    session : onnxruntime.InferenceSession
    config : dict
        The metadata entries, JSON-decoded: ``image_size``, ``mean``, ``std``,
        ``num_classes``, and ``resize_shorter``, ``classes``, ``model`` when present.
    """
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError("running an ONNX model needs onnxruntime: "
                          "pip install 'resnet-np[onnx]' (or pip install onnxruntime)") from err
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    providers = {"cpu": ["CPUExecutionProvider"], "gpu": ["CUDAExecutionProvider"]}.get(device)
    if providers is None:
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    if providers[0] not in onnxruntime.get_available_providers():
        raise RuntimeError(f"this onnxruntime has no {providers[0]} for device {device!r} "
                           "(pip install onnxruntime-gpu)")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3    # errors only: no warnings on the terminal
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as err:   # onnxruntime raises its own exception types for a bad file
        first_line = (str(err).strip().splitlines() or [""])[0]
        raise ValueError(f"{path}: not a readable ONNX model ({first_line})") from err
    meta = session.get_modelmeta().custom_metadata_map
    missing = [key for key in ("image_size", "mean", "std") if key not in meta]
    if missing:
        raise ValueError(f"{path}: no {', '.join(missing)} in its metadata, so its "
                         "preprocessing is unknown; export it with `resnet-np export`")
    config = {}
    for key, value in meta.items():
        try:
            config[key] = json.loads(value)
        except ValueError:
            config[key] = value
    if "num_classes" not in config:
        config["num_classes"] = session.get_outputs()[0].shape[1]
    return session, config
