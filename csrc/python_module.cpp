// The Python module fused_act._C.  Importing it loads this library, which registers the
// operators (ops.cpp, autograd.cpp and the device files).  It also has one function per
// out-of-place operator that calls it through the dispatcher straight from Python, for
// the eager calls of fused_act.functional: the same operator, autograd kernel and
// device kernel as torch.ops.fused_act.NAME, without the generic argument parsing of
// torch.ops (about a microsecond per call, which matters for memory-bound kernels).
// Each returns NotImplemented for what it does not take (tensor subclasses, a torch
// function mode, other dtypes or devices); fused_act.functional then uses torch.ops.
#include <ATen/ATen.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/autocast_mode.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>

#include <string>

#include "gated.h"
#include "op_names.h"

namespace fused_act {
namespace {


// Dispatch keys of tensors the fast path leaves to fused_act.functional: torch.func's
// wrappers (grad/jvp levels, vmap batches), functionalization and Python subclasses.
const c10::DispatchKeySet kNotPlain({c10::DispatchKey::FuncTorchGradWrapper,
                                     c10::DispatchKey::FuncTorchBatched,
                                     c10::DispatchKey::Functionalize, c10::DispatchKey::Python,
                                     c10::DispatchKey::PythonTLSSnapshot});

// The tensor, when the fast path takes it; nullptr otherwise.
const at::Tensor* fast_tensor(PyObject* obj) {
  if (!THPVariable_CheckExact(obj) || at::impl::torch_function_mode_enabled()) return nullptr;
  const at::Tensor& t = THPVariable_Unpack(obj);
  if (t.layout() != at::kStrided || t.is_nested() || t.key_set().has_any(kNotPlain))
    return nullptr;
  // A dual tensor that also records a graph (forward-over-reverse): fused_act.functional
  // decides (operators that save their output take the Python autograd.Function, whose
  // saved output keeps its tangent).
  if (t.requires_grad() && t._fw_grad(0).defined()) return nullptr;
  const auto st = t.scalar_type();
  if (st != at::kFloat && st != at::kDouble && st != at::kHalf && st != at::kBFloat16)
    return nullptr;
#ifdef FA_WITH_CUDA
  if (!t.is_cpu() && !t.is_cuda()) return nullptr;
#else
  if (!t.is_cpu()) return nullptr;
#endif
  return &t;
}

// Whether autocast is on for t's device: the operators autocast changes (prelu's weight,
// softmax's dtype) then take the Python path, which applies torch's policy.
bool autocasting(const at::Tensor& t) {
  return t.is_cuda() ? at::autocast::is_autocast_enabled(at::kCUDA)
                     : at::autocast::is_autocast_enabled(at::kCPU);
}

// An exact Python int that fits int64_t; false (the caller answers NotImplemented, and
// fused_act.functional's checks name the problem) otherwise.
bool exact_int(PyObject* obj, int64_t& out) {
  if (!PyLong_CheckExact(obj)) return false;
  int overflow = 0;
  out = PyLong_AsLongLongAndOverflow(obj, &overflow);
  if (out == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    return false;
  }
  return overflow == 0;
}

PyObject* not_implemented() {
  Py_INCREF(Py_NotImplemented);
  return Py_NotImplemented;
}

// NAME(x: Tensor, p: float, q: float) -> Tensor, and with kInplace NAME_(x, p, q) -> x
// (through the dispatcher: version counter, autograd history, inference-tensor check).
template <Act A, bool kInplace> struct Fast {
  static PyObject* call(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    HANDLE_TH_ERRORS
    if (nargs != 3 || !PyFloat_Check(args[1]) || !PyFloat_Check(args[2]))
      return not_implemented();
    const at::Tensor* x = fast_tensor(args[0]);
    if (x == nullptr) return not_implemented();
    const double p = PyFloat_AS_DOUBLE(args[1]), q = PyFloat_AS_DOUBLE(args[2]);
    if constexpr (kInplace) {
      static const auto op = find_op<sig::Inplace>(std::string(act_name(A)) + "_");
      {
        pybind11::gil_scoped_release no_gil;
        op.call(*x, p, q);
      }
      Py_INCREF(args[0]);
      return args[0];
    } else {
      static const auto op = find_op<sig::Forward>(act_name(A));
      at::Tensor y;
      {
        pybind11::gil_scoped_release no_gil;
        y = op.call(*x, p, q);
      }
      return THPVariable_Wrap(std::move(y));
    }
    END_HANDLE_TH_ERRORS
  }
};

// prelu / swish_weighted(x: Tensor, weight: Tensor) -> Tensor
template <const char* kName>
PyObject* fast_weighted(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 2 || !THPVariable_CheckExact(args[1])) return not_implemented();
  const at::Tensor* x = fast_tensor(args[0]);
  if (x == nullptr) return not_implemented();
  const at::Tensor& w = THPVariable_Unpack(args[1]);
  // A weight on another device would pick that device's kernel: the caller reports it.
  if (w.device() != x->device() || autocasting(*x) || w.layout() != at::kStrided ||
      w.key_set().has_any(kNotPlain))
    return not_implemented();
  static const auto op = find_op<sig::Weighted>(kName);
  at::Tensor y;
  {
    pybind11::gil_scoped_release no_gil;
    y = op.call(*x, w);
  }
  return THPVariable_Wrap(std::move(y));
  END_HANDLE_TH_ERRORS
}

// softmax(x: Tensor, dim: int, log: bool) -> Tensor, dim already checked by the caller.
PyObject* fast_softmax(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  int64_t dim = 0;
  if (nargs != 3 || !exact_int(args[1], dim) || !PyBool_Check(args[2]))
    return not_implemented();
  const at::Tensor* x = fast_tensor(args[0]);
  if (x == nullptr || autocasting(*x)) return not_implemented();
  const bool log = args[2] == Py_True;
  static const auto op = find_op<sig::Softmax>("softmax");
  at::Tensor y;
  {
    pybind11::gil_scoped_release no_gil;
    y = op.call(*x, dim, log);
  }
  return THPVariable_Wrap(std::move(y));
  END_HANDLE_TH_ERRORS
}

// NAME(x: Tensor, dim: int) -> Tensor, the gated operators (gated.h); the operator checks dim.
template <Gate G>
PyObject* fast_gated(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  int64_t dim = 0;
  if (nargs != 2 || !exact_int(args[1], dim)) return not_implemented();
  const at::Tensor* x = fast_tensor(args[0]);
  if (x == nullptr) return not_implemented();
  static const auto op = find_op<at::Tensor(const at::Tensor&, int64_t)>(gate_name(G));
  at::Tensor y;
  {
    pybind11::gil_scoped_release no_gil;
    y = op.call(*x, dim);
  }
  return THPVariable_Wrap(std::move(y));
  END_HANDLE_TH_ERRORS
}

// maxout(x: Tensor, pieces: int, dim: int) -> Tensor; the operator checks pieces and dim.
PyObject* fast_maxout(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  int64_t pieces = 0, dim = 0;
  if (nargs != 3 || !exact_int(args[1], pieces) || !exact_int(args[2], dim))
    return not_implemented();
  const at::Tensor* x = fast_tensor(args[0]);
  if (x == nullptr) return not_implemented();
  static const auto op = find_op<at::Tensor(const at::Tensor&, int64_t, int64_t)>("maxout");
  at::Tensor y;
  {
    pybind11::gil_scoped_release no_gil;
    y = op.call(*x, pieces, dim);
  }
  return THPVariable_Wrap(std::move(y));
  END_HANDLE_TH_ERRORS
}

PyMethodDef methods[] = {
#define FA_METHOD(name, F)                                                       \
  {#name, reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(            \
              &Fast<Act::name, false>::call)),                                          \
   METH_FASTCALL, "fused_act::" #name " on a plain tensor, else NotImplemented"},
    FA_FOR_EACH_ACTIVATION(FA_METHOD)
#undef FA_METHOD
#define FA_INPLACE_METHOD(name, F)                                               \
  {#name "_", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(        \
                  &Fast<Act::name, true>::call)),                               \
   METH_FASTCALL, "fused_act::" #name "_ on a plain tensor, else NotImplemented"},
    FA_FOR_EACH_ACTIVATION(FA_INPLACE_METHOD)
#undef FA_INPLACE_METHOD
#define FA_WEIGHTED_METHOD(name, F, op)                                                \
  {#op, reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(                    \
            &fast_weighted<kWeightedName_##op>)),                                          \
   METH_FASTCALL, "fused_act::" #op " on plain tensors, else NotImplemented"},
    FA_FOR_EACH_WEIGHTED(FA_WEIGHTED_METHOD)
#undef FA_WEIGHTED_METHOD
#define FA_GATED_METHOD(name, F, p, second)                                           \
  {#name, reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(                 \
              &fast_gated<Gate::name>)),                                              \
   METH_FASTCALL, "fused_act::" #name " on a plain tensor, else NotImplemented"},
    FA_FOR_EACH_GATED(FA_GATED_METHOD)
#undef FA_GATED_METHOD
    {"softmax", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&fast_softmax)),
     METH_FASTCALL, "fused_act::softmax on a plain tensor, else NotImplemented"},
    {"maxout", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&fast_maxout)),
     METH_FASTCALL, "fused_act::maxout on a plain tensor, else NotImplemented"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace
}  // namespace fused_act

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C",
                                      "fused_act operators and their fast eager entry points",
                                      -1, fused_act::methods};
  return PyModule_Create(&module);
}
