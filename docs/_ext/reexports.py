"""Cross-references to names that Sphinx does not index resolve where they live.

- ``resnet_np.data.Dataset`` is documented as ``resnet_np.data.dataset.Dataset``; a
  reference by the shorter, public path resolves to that entry.
- A module's constants (``:data:`CIFAR_MODEL```, ``:data:`resnet_np.models.MODELS```)
  carry no docstring of their own, and private helpers (``:func:`_helper```) have no
  entry; a reference to one resolves to its module's page, where its source is linked.
- A short name that is not defined where it is used (``:func:`winograd_tile``` in a
  module that imports it inside a function, ``:meth:`Dataset.fingerprint```) resolves
  to the one documented object whose name ends so; with none, or several, it stays
  missing. ``:attr:`StopSignals.requested```, an attribute set on instances, leads to
  its class.
- A Markdown link to a file of the package (``../resnet_np/functional/reference.py`` in
  tutorials/README.md) leads to that module's API page, which links its source.

A name that does not import stays missing, and fails the build.
"""
import importlib
import inspect
import re


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


def _canonical(target):
    """Where the object a dotted name reaches is defined, when that is another name."""
    found = _lookup(target)
    if found is None:
        return None
    obj = found[1]
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if module and qualname and f"{module}.{qualname}" != target:
        return f"{module}.{qualname}"
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
    """A short name (``:func:`winograd_tile``` in a module that imports it inside a
    function, ``:meth:`Dataset.fingerprint```) that ends the name of exactly one
    documented object of the package resolves to it. ``Class.attribute`` where the
    attribute is set on instances (no entry of its own) resolves to the class."""
    from sphinx.util.nodes import make_refnode

    name = node["reftarget"].lstrip("~.")
    if name.startswith("resnet_np."):
        return None
    domain = env.get_domain("py")

    def unique(suffix, types):
        found = [(fullname, obj) for fullname, obj in domain.objects.items()
                 if fullname.endswith("." + suffix) and obj.objtype in types]
        return found[0] if len(found) == 1 else None

    match = unique(name, domain.objtypes_for_role(node["reftype"]) or [])
    if match is None and "." in name and node["reftype"] == "attr":
        owner, attribute = name.rsplit(".", 1)
        match = unique(owner, ["class"])
        if match is not None:
            found = _lookup(match[0])
            cls = found[1] if found else None
            try:
                source = inspect.getsource(cls) if cls is not None else ""
            except (OSError, TypeError):
                source = ""
            if not (hasattr(cls, attribute)
                    or re.search(rf"\bself\.{re.escape(attribute)}\b", source)):
                match = None
    if match is None:
        return None
    fullname, obj = match
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
