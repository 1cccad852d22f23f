// C++ CPU kernel of multi-scale deformable attention (forward and backward).
//
// Forward runs at::parallel_for over the N * Lq * M (batch, query, head) triples. Backward
// partitions the work by batch element and group of heads: each task owns the grad_value rows
// of its heads, so no atomics are needed; when that gives fewer tasks than threads the queries
// are split as well and each split accumulates into a private copy of grad_value, summed at the
// end. In deterministic mode the queries are never split, so the gradients are the same bits for
// any number of threads (without it they are the same bits run to run for one thread count).
// Both passes work on a head-major copy of value, (N, M, S, D): the D channels of one head at
// neighbouring pixels are then adjacent in memory. In the (N, S, M, D) input they are M * D
// apart, a power of two, and the four corners of every sample fall into the same few cache sets.
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

// `value` is head-major (N, M, S, D) here and in backward_all.
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
  const int64_t samples = s.levels * s.points;
  const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, samples));
  at::parallel_for(0, s.batch * s.queries * s.heads, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / (s.queries * s.heads), m = i % s.heads;
      const scalar_t* v = value_ptr + (n * s.heads + m) * s.num_values * s.channels;
      forward_one_query(v, s.channels, shapes, starts, loc + i * samples * 2, attn + i * samples, s,
                        zeros.data(), out + i * s.channels);
    }
  });
}

// How backward splits the work: each task owns batch element n's heads of one group (all
// queries) or, when that gives fewer tasks than threads and `split_queries` allows it, also a
// share of the queries with a private copy of grad_value. The head grouping never changes the
// result; splitting the queries changes the order in which grad_value is summed.
struct BackwardSplit {
  int64_t head_groups, query_splits;
};

BackwardSplit backward_split(int64_t batch, int64_t heads, int64_t threads, bool split_queries) {
  // smallest divisor of M giving at least one task per thread, in a multiple of the threads
  for (int64_t groups = 1; groups <= heads; ++groups) {
    if (heads % groups == 0 && batch * groups >= threads && (batch * groups) % threads == 0) {
      return {groups, 1};
    }
  }
  const int64_t tasks = batch * heads;
  if (!split_queries || tasks >= threads) return {heads, 1};
  return {heads, (threads + tasks - 1) / tasks};
}

template <typename scalar_t, typename Sizes, typename BackwardFn>
void backward_all(const at::Tensor& value, const at::Tensor& spatial_shapes,
                  const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                  const at::Tensor& attention_weights, const at::Tensor& grad_output,
                  std::vector<at::Tensor>& grad_value_copies, at::Tensor& grad_loc,
                  at::Tensor& grad_attn, const Sizes& s, const BackwardSplit& split,
                  BackwardFn backward_queries) {
  const int64_t heads_per_group = s.heads / split.head_groups;
  const int64_t samples = s.levels * s.points;
  const int64_t* shapes = spatial_shapes.const_data_ptr<int64_t>();
  const int64_t* starts = level_start_index.const_data_ptr<int64_t>();
  const std::vector<scalar_t> zeros(s.channels, scalar_t(0));
  const int64_t tasks = s.batch * split.head_groups * split.query_splits;
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> scratch(s.channels);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t part = task % split.query_splits, unit = task / split.query_splits;
      const int64_t n = unit / split.head_groups, group = unit % split.head_groups;
      const int64_t q_begin = s.queries * part / split.query_splits;
      const int64_t q_end = s.queries * (part + 1) / split.query_splits;
      scalar_t* grad_value = grad_value_copies[part].data_ptr<scalar_t>();
      for (int64_t m = group * heads_per_group; m < (group + 1) * heads_per_group; ++m) {
        const int64_t value_offset = (n * s.heads + m) * s.num_values * s.channels;
        // this task alone writes this (n, m) slice of this copy: zero it here, in parallel
        std::fill_n(grad_value + value_offset, s.num_values * s.channels, scalar_t(0));
        const int64_t first = n * s.queries * s.heads + m;  // (n, q=0, m)
        backward_queries(value.const_data_ptr<scalar_t>() + value_offset,
                         grad_value + value_offset, s.channels, shapes, starts,
                         sampling_locations.const_data_ptr<scalar_t>() + first * samples * 2,
                         attention_weights.const_data_ptr<scalar_t>() + first * samples,
                         grad_output.const_data_ptr<scalar_t>() + first * s.channels,
                         grad_loc.data_ptr<scalar_t>() + first * samples * 2,
                         grad_attn.data_ptr<scalar_t>() + first * samples, q_begin, q_end, s,
                         zeros.data(), scratch.data());
      }
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
  const at::Tensor heads_major = value.transpose(1, 2).contiguous();
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
#ifdef MASK2FORMER_X86_DISPATCH
    if (cpu_has_avx2()) {
      forward_all<scalar_t>(heads_major, spatial_shapes, level_start_index, sampling_locations,
                            attention_weights, output, convert<avx2::Sizes>(s),
                            avx2::forward_one_query<scalar_t>);
      return;
    }
#endif
    forward_all<scalar_t>(heads_major, spatial_shapes, level_start_index, sampling_locations,
                          attention_weights, output, s, baseline::forward_one_query<scalar_t>);
  });
  return output;
}

std::vector<at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights, const at::Tensor& grad_output, bool deterministic) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights, at::kCPU);
  check_cpu_dtypes(value, sampling_locations, attention_weights);
  const baseline::Sizes s = sizes_of(value, sampling_locations);
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({s.batch, s.queries, s.heads * s.channels}) &&
                  grad_output.scalar_type() == value.scalar_type() && grad_output.is_contiguous(),
              "ms_deform_attn: grad_output must be a contiguous (N, Lq, M*D) tensor of value's "
              "dtype, got ", grad_output.sizes());
  const at::Tensor heads_major = value.transpose(1, 2).contiguous();
  const BackwardSplit split =
      backward_split(s.batch, s.heads, at::get_num_threads(), /*split_queries=*/!deterministic);
  std::vector<at::Tensor> grad_value_copies;
  for (int64_t i = 0; i < split.query_splits; ++i) {
    grad_value_copies.push_back(at::empty_like(heads_major));  // zeroed by backward_all
  }
  // every entry is written by backward_all
  at::Tensor grad_loc = at::empty_like(sampling_locations);
  at::Tensor grad_attn = at::empty_like(attention_weights);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
#ifdef MASK2FORMER_X86_DISPATCH
    if (cpu_has_avx2()) {
      backward_all<scalar_t>(heads_major, spatial_shapes, level_start_index, sampling_locations,
                             attention_weights, grad_output, grad_value_copies, grad_loc,
                             grad_attn, convert<avx2::Sizes>(s), split,
                             avx2::backward_queries<scalar_t>);
      return;
    }
#endif
    backward_all<scalar_t>(heads_major, spatial_shapes, level_start_index, sampling_locations,
                           attention_weights, grad_output, grad_value_copies, grad_loc, grad_attn,
                           s, split, baseline::backward_queries<scalar_t>);
  });
  at::Tensor grad_value = grad_value_copies[0];
  for (size_t i = 1; i < grad_value_copies.size(); ++i) grad_value.add_(grad_value_copies[i]);
  // (N, M, S, D) -> (N, S, M, D)
  return {grad_value.transpose(1, 2).contiguous(), grad_loc, grad_attn};
}

}  // namespace mask2former
