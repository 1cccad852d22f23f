// C++ CPU kernel of multi-scale deformable attention (forward and backward).
//
// Forward runs at::parallel_for over the N * Lq * M (batch, query, head) triples. Backward
// partitions the work by (batch, head): each task owns the grad_value rows of its pair, so no
// atomics are needed; when there are fewer pairs than threads the queries are split as well and
// each split accumulates into a private copy of grad_value, summed at the end.
// The loops are compiled twice, for the baseline ISA and for AVX2+FMA, chosen at run time.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../ms_deform_attn.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define MASK2FORMER_X86_DISPATCH 1
#endif

namespace mask2former {

namespace baseline {
#include "ms_deform_attn_cpu_kernel.h"
}  // namespace baseline

#ifdef MASK2FORMER_X86_DISPATCH
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#include "ms_deform_attn_cpu_kernel.h"
}  // namespace avx2
#pragma GCC pop_options
#endif

namespace {

bool cpu_has_avx2() {
#ifdef MASK2FORMER_X86_DISPATCH
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

baseline::Sizes sizes_of(const at::Tensor& value, const at::Tensor& sampling_locations) {
  return {value.size(0),
          value.size(1),
          value.size(2),
          value.size(3),
          sampling_locations.size(1),
          sampling_locations.size(3),
          sampling_locations.size(4)};
}

template <typename Sizes>
Sizes convert(const baseline::Sizes& s) {
  return {s.batch, s.num_values, s.heads, s.channels, s.queries, s.levels, s.points};
}

template <typename scalar_t, typename Sizes, typename ForwardFn>
void forward_all(const at::Tensor& value, const at::Tensor& spatial_shapes,
                 const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                 const at::Tensor& attention_weights, at::Tensor& output, const Sizes& s,
                 ForwardFn forward_one_query) {
  const scalar_t* value_ptr = value.const_data_ptr<scalar_t>();
  const scalar_t* loc = sampling_locations.const_data_ptr<scalar_t>();
  const scalar_t* attn = attention_weights.const_data_ptr<scalar_t>();
  const int64_t* shapes = spatial_shapes.const_data_ptr<int64_t>();
  const int64_t* starts = level_start_index.const_data_ptr<int64_t>();
  scalar_t* out = output.data_ptr<scalar_t>();
  const std::vector<scalar_t> zeros(s.channels, scalar_t(0));
  const int64_t stride = s.heads * s.channels, samples = s.levels * s.points;
  const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, samples));
  at::parallel_for(0, s.batch * s.queries * s.heads, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / (s.queries * s.heads), m = i % s.heads;
      const scalar_t* v = value_ptr + n * s.num_values * stride + m * s.channels;
      forward_one_query(v, stride, shapes, starts, loc + i * samples * 2, attn + i * samples, s,
                        zeros.data(), out + i * s.channels);
    }
  });
}

template <typename scalar_t, typename Sizes, typename BackwardFn>
void backward_all(const at::Tensor& value, const at::Tensor& spatial_shapes,
                  const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                  const at::Tensor& attention_weights, const at::Tensor& grad_output,
                  std::vector<at::Tensor>& grad_value_copies, at::Tensor& grad_loc,
                  at::Tensor& grad_attn, const Sizes& s, BackwardFn backward_queries) {
  const int64_t pairs = s.batch * s.heads, splits = grad_value_copies.size();
  const int64_t stride = s.heads * s.channels, samples = s.levels * s.points;
  const int64_t* shapes = spatial_shapes.const_data_ptr<int64_t>();
  const int64_t* starts = level_start_index.const_data_ptr<int64_t>();
  const std::vector<scalar_t> zeros(s.channels, scalar_t(0));
  at::parallel_for(0, pairs * splits, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> scratch(s.channels);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t pair = task / splits, split = task % splits;
      const int64_t n = pair / s.heads, m = pair % s.heads;
      const int64_t value_offset = n * s.num_values * stride + m * s.channels;
      const int64_t first = (n * s.queries * s.heads + m);  // (n, q=0, m)
      backward_queries(value.const_data_ptr<scalar_t>() + value_offset,
                       grad_value_copies[split].data_ptr<scalar_t>() + value_offset, stride,
                       shapes, starts, sampling_locations.const_data_ptr<scalar_t>() + first * samples * 2,
                       attention_weights.const_data_ptr<scalar_t>() + first * samples,
                       grad_output.const_data_ptr<scalar_t>() + first * s.channels,
                       grad_loc.data_ptr<scalar_t>() + first * samples * 2,
                       grad_attn.data_ptr<scalar_t>() + first * samples,
                       s.queries * split / splits, s.queries * (split + 1) / splits, s,
                       zeros.data(), scratch.data());
    }
  });
}

}  // namespace

void check_ms_deform_attn_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                 const at::Tensor& level_start_index,
                                 const at::Tensor& sampling_locations,
                                 const at::Tensor& attention_weights, at::DeviceType device) {
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn: value must be (N, S, M, D), got ",
              value.sizes());
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(5) == 2,
              "ms_deform_attn: sampling_locations must be (N, Lq, M, L, P, 2), got ",
              sampling_locations.sizes());
  const int64_t levels = sampling_locations.size(3);
  TORCH_CHECK(sampling_locations.size(0) == value.size(0) &&
                  sampling_locations.size(2) == value.size(2),
              "ms_deform_attn: sampling_locations ", sampling_locations.sizes(),
              " does not match value ", value.sizes(), " in N or M");
  TORCH_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "ms_deform_attn: attention_weights must be (N, Lq, M, L, P), got ",
              attention_weights.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(0) == levels &&
                  spatial_shapes.size(1) == 2 && level_start_index.dim() == 1 &&
                  level_start_index.size(0) == levels,
              "ms_deform_attn: spatial_shapes must be (L, 2) and level_start_index (L,)");
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong &&
                  level_start_index.scalar_type() == at::kLong,
              "ms_deform_attn: spatial_shapes and level_start_index must be int64");
  for (const at::Tensor* t : {&value, &spatial_shapes, &level_start_index, &sampling_locations,
                              &attention_weights}) {
    TORCH_CHECK(t->device().type() == device, "ms_deform_attn: expected all inputs on ", device,
                ", got one on ", t->device());
    TORCH_CHECK(t->is_contiguous(), "ms_deform_attn: inputs must be contiguous");
  }
}

namespace {

void check_cpu_dtypes(const at::Tensor& value, const at::Tensor& sampling_locations,
                      const at::Tensor& attention_weights) {
  const auto dtype = value.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "ms_deform_attn CPU kernel: value must be float32 or float64, got ", dtype);
  TORCH_CHECK(sampling_locations.scalar_type() == dtype &&
                  attention_weights.scalar_type() == dtype,
              "ms_deform_attn CPU kernel: value, sampling_locations and attention_weights must "
              "share one dtype");
}

}  // namespace

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights, at::kCPU);
  check_cpu_dtypes(value, sampling_locations, attention_weights);
  const baseline::Sizes s = sizes_of(value, sampling_locations);
  at::Tensor output = at::empty({s.batch, s.queries, s.heads * s.channels}, value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
#ifdef MASK2FORMER_X86_DISPATCH
    if (cpu_has_avx2()) {
      forward_all<scalar_t>(value, spatial_shapes, level_start_index, sampling_locations,
                            attention_weights, output, convert<avx2::Sizes>(s),
                            avx2::forward_one_query<scalar_t>);
      return;
    }
#endif
    forward_all<scalar_t>(value, spatial_shapes, level_start_index, sampling_locations,
                          attention_weights, output, s, baseline::forward_one_query<scalar_t>);
  });
  return output;
}

std::vector<at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights, const at::Tensor& grad_output) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights, at::kCPU);
  check_cpu_dtypes(value, sampling_locations, attention_weights);
  const baseline::Sizes s = sizes_of(value, sampling_locations);
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({s.batch, s.queries, s.heads * s.channels}) &&
                  grad_output.scalar_type() == value.scalar_type() && grad_output.is_contiguous(),
              "ms_deform_attn: grad_output must be a contiguous (N, Lq, M*D) tensor of value's "
              "dtype, got ", grad_output.sizes());
  // split the queries too when there are fewer (batch, head) pairs than threads
  const int64_t pairs = s.batch * s.heads, threads = at::get_num_threads();
  const int64_t splits = pairs >= threads ? 1 : (threads + pairs - 1) / pairs;
  std::vector<at::Tensor> grad_value_copies;
  for (int64_t i = 0; i < splits; ++i) grad_value_copies.push_back(at::zeros_like(value));
  at::Tensor grad_loc = at::zeros_like(sampling_locations);
  at::Tensor grad_attn = at::zeros_like(attention_weights);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
#ifdef MASK2FORMER_X86_DISPATCH
    if (cpu_has_avx2()) {
      backward_all<scalar_t>(value, spatial_shapes, level_start_index, sampling_locations,
                             attention_weights, grad_output, grad_value_copies, grad_loc,
                             grad_attn, convert<avx2::Sizes>(s), avx2::backward_queries<scalar_t>);
      return;
    }
#endif
    backward_all<scalar_t>(value, spatial_shapes, level_start_index, sampling_locations,
                           attention_weights, grad_output, grad_value_copies, grad_loc, grad_attn,
                           s, baseline::backward_queries<scalar_t>);
  });
  at::Tensor grad_value = grad_value_copies[0];
  for (int64_t i = 1; i < splits; ++i) grad_value.add_(grad_value_copies[i]);
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace mask2former
