"""Compiles the functions and classes generated from the activation table (fused_act/_table.py)
from source, the way dataclasses and attrs generate methods.  The source is entered in
linecache under a name of its own, so tracebacks, ``inspect.getsource`` and TorchScript (which
compiles a module's ``forward`` from its source) see it as they see a file's."""
import linecache


def define(source: str, name: str, namespace: dict) -> None:
    """Runs `source` (definitions) in `namespace`, under the file name <fused_act.NAME>."""
    filename = f"<fused_act.{name}>"
    lines = source.splitlines(True)
    linecache.cache[filename] = (len(source), None, lines, filename)
    exec(compile(source, filename, "exec"), namespace)
