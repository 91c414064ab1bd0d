"""ONNX Runtime as a forward-only CPU competitor of bench/run.py.

Set-up, chosen to give ONNX Runtime its best honest setting:
* the model is torch's reference op (the table's ``reference`` with the setting's
  arguments) exported once per op and setting by torch.onnx.export (the TorchScript-based
  exporter, ``dynamo=False``: it works offline and exports in well under a second), with
  both dimensions dynamic so that one session serves every size and row length;
* one InferenceSession on the CPUExecutionProvider: all graph optimizations
  (ORT_ENABLE_ALL), sequential execution, intra-op threads = the bench's thread count,
  inter-op threads 1, and worker threads that do not spin after a call (they would
  otherwise burn the cores the next implementation of the same round runs on);
* I/O binding: the input is bound to the memory of the torch tensor (no copy), the output
  is allocated by ONNX Runtime on every call, as every other implementation allocates its
  own; the timed call is ``session.run_with_iobinding`` alone.
float32 only: ONNX Runtime's CPU kernels of these ops do not take bfloat16.
"""
import io
import warnings

import torch

try:
    import onnx  # noqa: F401
    import onnxruntime as ort
    _IMPORT_ERROR = None
except ImportError as err:  # optional competitor
    ort = None
    _IMPORT_ERROR = err


def describe():
    if ort is None:
        return None
    return {"version": ort.__version__, "exporter": "torch.onnx.export(dynamo=False)",
            "provider": "CPUExecutionProvider", "graph_optimization": "ORT_ENABLE_ALL",
            "io_binding": True, "spinning": False}


def why_not(device, dtype):
    if ort is None:
        return (f"onnx/onnxruntime are not installed ({_IMPORT_ERROR}); "
                "pip install onnx onnxruntime")
    if device.type != "cpu":
        return "it is benchmarked on CPU only"
    if dtype != torch.float32:
        return "float32 only"
    return None


def usable(device, dtype) -> bool:
    return why_not(device, dtype) is None


class _Reference(torch.nn.Module):
    def __init__(self, fn, kwargs):
        super().__init__()
        self.fn, self.kwargs = fn, kwargs

    def forward(self, x):
        return self.fn(x, **self.kwargs)


def export(act, setting, example: torch.Tensor) -> bytes:
    """The ONNX model of ``act.reference`` with this setting's arguments."""
    kwargs = setting.kwargs(example)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Reference(act.reference, kwargs).eval(), (example,), buf,
                          dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "rows", 1: "cols"},
                                        "y": {0: "rows", 1: "cols"}})
    return buf.getvalue()


class Bound:
    """One input bound to a session: ``run()`` is the timed call, ``output()`` the result
    of a run as a torch tensor (for the agreement check)."""

    def __init__(self, session, x: torch.Tensor):
        self._x = x.contiguous()
        self._arr = self._x.numpy()  # shares the tensor's memory
        self._sess = session
        self._binding = session.io_binding()
        self._binding.bind_cpu_input("x", self._arr)
        self._binding.bind_output("y")  # allocated by ONNX Runtime on every run

    def run(self):
        self._sess.run_with_iobinding(self._binding)

    def output(self) -> torch.Tensor:
        self.run()
        return torch.from_numpy(self._binding.copy_outputs_to_cpu()[0])


class Session:
    def __init__(self, act, setting, threads: int):
        if ort is None:
            raise RuntimeError(why_not(torch.device("cpu"), torch.float32))
        example = torch.randn(4, 1024)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(export(act, setting, example), opts,
                                            providers=["CPUExecutionProvider"])

    def bind(self, x: torch.Tensor) -> Bound:
        if x.dtype != torch.float32 or x.device.type != "cpu":
            raise ValueError("onnxruntime: float32 CPU tensors only")
        return Bound(self.session, x)
