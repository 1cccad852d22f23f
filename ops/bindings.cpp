// Python bindings of the extension mask2former._C.
#include <torch/extension.h>

#include "ms_deform_attn.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Multi-scale deformable attention kernels of mask2former";
  m.def("ms_deform_attn_forward_cpu", &mask2former::ms_deform_attn_forward_cpu);
  m.def("ms_deform_attn_backward_cpu", &mask2former::ms_deform_attn_backward_cpu, py::arg("value"),
        py::arg("spatial_shapes"), py::arg("level_start_index"), py::arg("sampling_locations"),
        py::arg("attention_weights"), py::arg("grad_output"), py::arg("deterministic"));
#ifdef WITH_CUDA
  m.def("ms_deform_attn_forward_cuda", &mask2former::ms_deform_attn_forward_cuda);
  m.def("ms_deform_attn_backward_cuda", &mask2former::ms_deform_attn_backward_cuda,
        py::arg("value"), py::arg("spatial_shapes"), py::arg("level_start_index"),
        py::arg("sampling_locations"), py::arg("attention_weights"), py::arg("grad_output"),
        py::arg("deterministic"));
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
