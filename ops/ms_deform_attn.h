// Multi-scale deformable attention kernels: declarations shared by the bindings and backends.
//
// Shapes (all tensors contiguous):
//   value              (N, S, M, D)
//   spatial_shapes     (L, 2) int64, (H_l, W_l)
//   level_start_index  (L,) int64
//   sampling_locations (N, Lq, M, L, P, 2), (x, y) in [0, 1] of each level
//   attention_weights  (N, Lq, M, L, P)
//   output             (N, Lq, M * D)
// Sampling is bilinear with zero padding and pixel centres at (i + 0.5) / size, as
// grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False).
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace mask2former {

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights);

// Returns {grad_value, grad_sampling_locations, grad_attention_weights}. With `deterministic`
// the gradients are the same bits on every run and for any number of threads.
std::vector<at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights, const at::Tensor& grad_output, bool deterministic);

#ifdef WITH_CUDA
// value and attention_weights in float32, float16, bfloat16 or float64; sampling_locations in
// float32 (float64 with float64 value). Accumulates in float32 (float64). Returns grad_value
// and grad_attention_weights in value's dtype, grad_sampling_locations in the locations' dtype.
at::Tensor ms_deform_attn_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights);

// Without `deterministic` grad_value is summed with float atomics, in an order that varies from
// run to run; with it, each grad_value row is summed in a fixed order (slower, more memory).
std::vector<at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights, const at::Tensor& grad_output, bool deterministic);
#endif

// Checks shared by the backends: dimensions, sizes, dtypes, contiguity and devices.
void check_ms_deform_attn_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                 const at::Tensor& level_start_index,
                                 const at::Tensor& sampling_locations,
                                 const at::Tensor& attention_weights, at::DeviceType device);

}  // namespace mask2former
