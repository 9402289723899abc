"""Cross-references to names that Sphinx does not index resolve where they live.

- ``resnet_np.data.Dataset`` is documented as ``resnet_np.data.dataset.Dataset``; a
  reference by the shorter, public path resolves to that entry.
- A module's constants (``:data:`CIFAR_MODEL```, ``:data:`resnet_np.models.MODELS```)
  carry no docstring of their own, and private helpers (``:func:`_helper```) have no
  entry; a reference to one resolves to its module's page, where its source is linked.
- A bare name that is not defined where it is used (``:func:`winograd_tile``` in a
  module that imports it inside a function) resolves to the one documented object of
  that name; with none, or several, it stays missing.
- A Markdown link to a file of the package (``../resnet_np/functional/reference.py`` in
  tutorials/README.md) leads to that module's API page, which links its source.

A name that does not import stays missing, and fails the build.
"""
import importlib
import re


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


def _module_page(app, env, node, contnode, module):
    return env.get_domain("py").resolve_xref(env, node["refdoc"], app.builder, "mod", module,
                                             node, contnode)


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
    found = _lookup(target)
    if found is None:
        return _unique_name(app, env, node, contnode)
    module, obj = found
    private = target.rsplit(".", 1)[-1].startswith("_")
    if (node["reftype"] == "data" and not callable(obj)) or private:
        return _module_page(app, env, node, contnode, getattr(obj, "__module__", None) or module)
    return None


def _unique_name(app, env, node, contnode):
    """A bare name (``:func:`winograd_tile``` in a module that imports it inside a
    function) that names exactly one documented object of the package resolves to it."""
    from sphinx.util.nodes import make_refnode

    name = node["reftarget"].lstrip("~.")
    if "." in name:
        return None
    domain = env.get_domain("py")
    types = domain.objtypes_for_role(node["reftype"]) or []
    matches = [(fullname, obj) for fullname, obj in domain.objects.items()
               if fullname.endswith("." + name) and obj.objtype in types]
    if len(matches) != 1:
        return None
    fullname, obj = matches[0]
    return make_refnode(app.builder, node["refdoc"], obj.docname, obj.node_id, contnode, fullname)


_SOURCE_LINK = re.compile(r"\]\(((?:\.\./)*)(resnet_np/[\w/]+)\.py\)")


def _source_links(app, docname, source):
    """Markdown links to the package's files point at their modules' API pages."""
    up = "../" * docname.count("/")

    def page(match):
        module = match.group(2).replace("/", ".").removesuffix(".__init__")
        return f"]({up}api/generated/{module}.rst)"

    source[0] = _SOURCE_LINK.sub(page, source[0])


def setup(app):
    app.connect("missing-reference", _resolve)
    app.connect("source-read", _source_links)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
