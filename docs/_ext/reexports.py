"""Cross-references to names that Sphinx does not index resolve where they live.

- ``resnet_np.data.Dataset`` is documented as ``resnet_np.data.dataset.Dataset``; a
  reference by the shorter, public path resolves to that entry.
- A module's constants (``:data:`CIFAR_MODEL```, ``:data:`resnet_np.models.MODELS```)
  carry no docstring of their own; a reference to one resolves to its module's page.

A name that does not import stays missing, and fails the build.
"""
import importlib


def _canonical(target):
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        module = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", None)
        if module and qualname and f"{module}.{qualname}" != target:
            return f"{module}.{qualname}"
        return None
    return None


def _lookup(target):
    """(module name, object) for a dotted ``resnet_np`` name, or None."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        module = obj.__name__
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return module, obj
    return None


def _resolve(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    if not target.startswith("resnet_np.") and node.get("py:module"):
        target = f"{node['py:module']}.{target}"
    if not target.startswith("resnet_np."):
        return None
    domain = env.get_domain("py")
    canonical = _canonical(target)
    if canonical is not None:
        found = domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                    canonical, node, contnode)
        if found is not None:
            return found
    if node["reftype"] == "data":
        found = _lookup(target)
        if found is not None and not callable(found[1]):
            return domain.resolve_xref(env, node["refdoc"], app.builder, "mod", found[0],
                                       node, contnode)
    return None


def setup(app):
    app.connect("missing-reference", _resolve)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
