// CUDA kernel of multi-scale deformable attention (forward and backward).
//
// One warp per (batch, query, head) triple; its 32 lanes cover the D channels (lane, lane + 32,
// ...), so value reads are coalesced. Inputs may be float32, float16, bfloat16 or float64;
// arithmetic and accumulation use at::opmath_type (float32, or float64 for float64 input).
// Backward reduces the per-sample dot products (for the attention and location gradients) with
// warp shuffles and scatters grad_value with atomicAdd into an opmath-typed buffer, which is
// cast to value's dtype at the end, so half-precision gradients are not summed in half precision.
// The order of those float atomics varies from run to run, and so do the last bits of grad_value.
// The deterministic backward (torch.use_deterministic_algorithms) instead gathers: every
// (sample, corner) pair becomes an entry keyed by the grad_value row (n, s, m) it adds to; a
// stable sort groups each row's entries in a fixed order, and one warp per row sums them.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
// Not ATen/cuda/CUDAContext.h: it pulls in cuBLAS/cuSPARSE headers that a minimal toolkit lacks.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <optional>
#include <tuple>
#include <vector>

#include "../ms_deform_attn.h"

namespace mask2former {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;

struct Sizes {
  int64_t batch, num_values, heads, channels, queries, levels, points;
};

// Bilinear footprint of one location on one level; position -1 marks a corner outside it.
template <typename acc_t>
struct Footprint {
  int64_t position[4];  // y * W + x of corners (y0,x0), (y0,x1), (y1,x0), (y1,x1)
  acc_t weight[4];
  acc_t fx, fy;
};

template <typename acc_t>
__device__ __forceinline__ bool bilinear_footprint(acc_t loc_x, acc_t loc_y, int64_t height,
                                                   int64_t width, Footprint<acc_t>& f) {
  const acc_t x = loc_x * static_cast<acc_t>(width) - static_cast<acc_t>(0.5);
  const acc_t y = loc_y * static_cast<acc_t>(height) - static_cast<acc_t>(0.5);
  const acc_t x0f = floor(x);
  const acc_t y0f = floor(y);
  // written so that NaN locations are rejected too
  if (!(x0f >= -1 && x0f <= width - 1 && y0f >= -1 && y0f <= height - 1)) return false;
  const int64_t x0 = static_cast<int64_t>(x0f);
  const int64_t y0 = static_cast<int64_t>(y0f);
  f.fx = x - x0f;
  f.fy = y - y0f;
  const bool left = x0 >= 0, right = x0 + 1 < width, top = y0 >= 0, bottom = y0 + 1 < height;
  f.position[0] = (top && left) ? y0 * width + x0 : -1;
  f.position[1] = (top && right) ? y0 * width + x0 + 1 : -1;
  f.position[2] = (bottom && left) ? (y0 + 1) * width + x0 : -1;
  f.position[3] = (bottom && right) ? (y0 + 1) * width + x0 + 1 : -1;
  f.weight[0] = (1 - f.fy) * (1 - f.fx);
  f.weight[1] = (1 - f.fy) * f.fx;
  f.weight[2] = f.fy * (1 - f.fx);
  f.weight[3] = f.fy * f.fx;
  return true;
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t x) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffff, x, offset);
  return x;
}

// output[(n, q, m), d] for each warp = one (n, q, m) triple.
template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ value,
                               const int64_t* __restrict__ spatial_shapes,
                               const int64_t* __restrict__ level_start_index,
                               const acc_t* __restrict__ loc, const scalar_t* __restrict__ attn,
                               scalar_t* __restrict__ output, Sizes s) {
  const int64_t triple = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (triple >= s.batch * s.queries * s.heads) return;
  const int64_t n = triple / (s.queries * s.heads), m = triple % s.heads;
  const int64_t stride = s.heads * s.channels, samples = s.levels * s.points;
  const scalar_t* v = value + n * s.num_values * stride + m * s.channels;
  const acc_t* t_loc = loc + triple * samples * 2;
  const scalar_t* t_attn = attn + triple * samples;
  Footprint<acc_t> f;
  for (int64_t d = lane; d < s.channels; d += kWarp) {
    acc_t sum = 0;
    for (int64_t l = 0; l < s.levels; ++l) {
      const int64_t h = spatial_shapes[2 * l], w = spatial_shapes[2 * l + 1];
      const scalar_t* level = v + level_start_index[l] * stride + d;
      for (int64_t p = 0; p < s.points; ++p) {
        const int64_t i = l * s.points + p;
        if (!bilinear_footprint(t_loc[2 * i], t_loc[2 * i + 1], h, w, f)) continue;
        const acc_t a = static_cast<acc_t>(t_attn[i]);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (f.position[k] >= 0) {
            sum += a * f.weight[k] * static_cast<acc_t>(level[f.position[k] * stride]);
          }
        }
      }
    }
    output[triple * s.channels + d] = static_cast<scalar_t>(sum);
  }
}

// Gradients for each warp = one (n, q, m) triple; grad_value is accumulated atomically when
// kScatterValue, else left to the deterministic gather below (grad_value is then unused).
template <typename scalar_t, typename acc_t, bool kScatterValue>
__global__ void backward_kernel(const scalar_t* __restrict__ value,
                                const int64_t* __restrict__ spatial_shapes,
                                const int64_t* __restrict__ level_start_index,
                                const acc_t* __restrict__ loc, const scalar_t* __restrict__ attn,
                                const scalar_t* __restrict__ grad_output,
                                acc_t* __restrict__ grad_value, acc_t* __restrict__ grad_loc,
                                scalar_t* __restrict__ grad_attn, Sizes s) {
  const int64_t triple = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (triple >= s.batch * s.queries * s.heads) return;  // whole warps exit together
  const int64_t n = triple / (s.queries * s.heads), m = triple % s.heads;
  const int64_t stride = s.heads * s.channels, samples = s.levels * s.points;
  const int64_t offset = n * s.num_values * stride + m * s.channels;
  const scalar_t* g = grad_output + triple * s.channels;
  Footprint<acc_t> f;
  for (int64_t l = 0; l < s.levels; ++l) {
    const int64_t h = spatial_shapes[2 * l], w = spatial_shapes[2 * l + 1];
    const int64_t level_offset = offset + level_start_index[l] * stride;
    for (int64_t p = 0; p < s.points; ++p) {
      const int64_t i = triple * samples + l * s.points + p;
      if (!bilinear_footprint(loc[2 * i], loc[2 * i + 1], h, w, f)) continue;  // warp-uniform
      const acc_t a = static_cast<acc_t>(attn[i]);
      acc_t d_attn = 0, d_x = 0, d_y = 0;
      for (int64_t d = lane; d < s.channels; d += kWarp) {
        const acc_t gd = static_cast<acc_t>(g[d]);
        acc_t v[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int64_t at = level_offset + f.position[k] * stride + d;
          v[k] = f.position[k] >= 0 ? static_cast<acc_t>(value[at]) : acc_t(0);
          if (kScatterValue && f.position[k] >= 0) atomicAdd(grad_value + at, a * f.weight[k] * gd);
        }
        const acc_t top = v[0] + f.fx * (v[1] - v[0]), bottom = v[2] + f.fx * (v[3] - v[2]);
        d_attn += gd * (top + f.fy * (bottom - top));
        d_x += gd * ((1 - f.fy) * (v[1] - v[0]) + f.fy * (v[3] - v[2]));
        d_y += gd * (bottom - top);
      }
      d_attn = warp_sum(d_attn);
      d_x = warp_sum(d_x);
      d_y = warp_sum(d_y);
      if (lane == 0) {
        grad_attn[i] = static_cast<scalar_t>(d_attn);
        // d fx / d loc_x = W, d fy / d loc_y = H
        grad_loc[2 * i] = a * static_cast<acc_t>(w) * d_x;
        grad_loc[2 * i + 1] = a * static_cast<acc_t>(h) * d_y;
      }
    }
  }
}

// One thread per sample (n, q, m, l, p): its four grad_value entries. Entry 4 * sample + k gets
// key = the row (n * S + s) * M + m of (N, S, M, D) grad_value that corner k adds to, or
// `absent` (= N * S * M, sorted last) when the corner is outside the level, and the coefficient
// attention * bilinear weight of grad_output[(n, q, m), :] in that row.
template <typename scalar_t, typename acc_t>
__global__ void value_entries_kernel(const int64_t* __restrict__ spatial_shapes,
                                     const int64_t* __restrict__ level_start_index,
                                     const acc_t* __restrict__ loc,
                                     const scalar_t* __restrict__ attn,
                                     int64_t* __restrict__ keys, acc_t* __restrict__ coefs,
                                     Sizes s) {
  const int64_t sample = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t samples = s.levels * s.points;
  if (sample >= s.batch * s.queries * s.heads * samples) return;
  const int64_t triple = sample / samples, l = (sample % samples) / s.points;
  const int64_t n = triple / (s.queries * s.heads), m = triple % s.heads;
  const int64_t h = spatial_shapes[2 * l], w = spatial_shapes[2 * l + 1];
  const int64_t absent = s.batch * s.num_values * s.heads;
  Footprint<acc_t> f;
  const bool any = bilinear_footprint(loc[2 * sample], loc[2 * sample + 1], h, w, f);
  const acc_t a = static_cast<acc_t>(attn[sample]);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const bool inside = any && f.position[k] >= 0;
    const int64_t position = n * s.num_values + level_start_index[l] + (inside ? f.position[k] : 0);
    keys[4 * sample + k] = inside ? position * s.heads + m : absent;
    coefs[4 * sample + k] = inside ? a * f.weight[k] : acc_t(0);
  }
}

// One warp per grad_value row r = (n, s, m), lanes over the D channels: the sum over the row's
// entries, in sorted order order[row_begin[r]] .. order[row_begin[r + 1] - 1], of
// coefficient * grad_output[(n, q, m), d]. Every row is written once, so no atomics.
template <typename scalar_t, typename acc_t>
__global__ void gather_value_grad_kernel(const int64_t* __restrict__ row_begin,
                                         const int64_t* __restrict__ order,
                                         const acc_t* __restrict__ coefs,
                                         const scalar_t* __restrict__ grad_output,
                                         scalar_t* __restrict__ grad_value, Sizes s) {
  const int64_t row = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= s.batch * s.num_values * s.heads) return;
  const int64_t samples = s.levels * s.points;
  const int64_t begin = row_begin[row], end = row_begin[row + 1];
  for (int64_t d = lane; d < s.channels; d += kWarp) {
    acc_t sum = 0;
    for (int64_t j = begin; j < end; ++j) {
      const int64_t entry = order[j];
      const int64_t triple = entry / (4 * samples);
      sum += coefs[entry] * static_cast<acc_t>(grad_output[triple * s.channels + d]);
    }
    grad_value[row * s.channels + d] = static_cast<scalar_t>(sum);
  }
}

Sizes sizes_of(const at::Tensor& value, const at::Tensor& sampling_locations) {
  return {value.size(0),
          value.size(1),
          value.size(2),
          value.size(3),
          sampling_locations.size(1),
          sampling_locations.size(3),
          sampling_locations.size(4)};
}

// Blocks of kThreads threads for `items` work items of `threads_per_item` threads each.
int64_t blocks_for(int64_t items, int64_t threads_per_item) {
  const int64_t items_per_block = kThreads / threads_per_item;
  return (items + items_per_block - 1) / items_per_block;
}

int64_t num_blocks(const Sizes& s) { return blocks_for(s.batch * s.queries * s.heads, kWarp); }

void check_cuda_dtypes(const at::Tensor& value, const at::Tensor& sampling_locations,
                       const at::Tensor& attention_weights) {
  const auto dtype = value.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 ||
                  dtype == at::kDouble,
              "ms_deform_attn CUDA kernel: value must be float32/float16/bfloat16/float64, got ",
              dtype);
  const auto coords = dtype == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(attention_weights.scalar_type() == dtype,
              "ms_deform_attn CUDA kernel: attention_weights must have value's dtype ", dtype);
  TORCH_CHECK(sampling_locations.scalar_type() == coords,
              "ms_deform_attn CUDA kernel: sampling_locations must be ", coords);
}

}  // namespace

at::Tensor ms_deform_attn_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights, at::kCUDA);
  check_cuda_dtypes(value, sampling_locations, attention_weights);
  const c10::cuda::CUDAGuard guard(value.device());
  const Sizes s = sizes_of(value, sampling_locations);
  at::Tensor output = at::empty({s.batch, s.queries, s.heads * s.channels}, value.options());
  if (output.numel() == 0) return output;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        forward_kernel<scalar_t, acc_t><<<num_blocks(s), kThreads, 0, stream>>>(
            value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
            level_start_index.const_data_ptr<int64_t>(),
            sampling_locations.const_data_ptr<acc_t>(),
            attention_weights.const_data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), s);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return output;
}

namespace {

// grad_value (N, S, M, D) in value's dtype, each element summed in a fixed order (see the top).
// Temporary memory: about 44 bytes per (sample, corner) entry, N * Lq * M * L * P * 4 entries
// (key, coefficient, the sorted keys and order, and the sort's scratch).
at::Tensor deterministic_value_grad(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                    const at::Tensor& level_start_index,
                                    const at::Tensor& sampling_locations,
                                    const at::Tensor& attention_weights,
                                    const at::Tensor& grad_output, const Sizes& s) {
  const int64_t samples = s.batch * s.queries * s.heads * s.levels * s.points;
  const int64_t entries = 4 * samples;
  const int64_t rows = s.batch * s.num_values * s.heads;
  if (entries == 0 || value.numel() == 0) return at::zeros_like(value);
  const auto acc_dtype = value.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor keys = at::empty({entries}, value.options().dtype(at::kLong));
  at::Tensor coefs = at::empty({entries}, value.options().dtype(acc_dtype));
  at::Tensor grad_value = at::empty_like(value);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_value_entries", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        value_entries_kernel<scalar_t, acc_t><<<blocks_for(samples, 1), kThreads, 0, stream>>>(
            spatial_shapes.const_data_ptr<int64_t>(), level_start_index.const_data_ptr<int64_t>(),
            sampling_locations.const_data_ptr<acc_t>(),
            attention_weights.const_data_ptr<scalar_t>(), keys.data_ptr<int64_t>(),
            coefs.data_ptr<acc_t>(), s);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  // stable: the entries of one row keep their (n, q, m, l, p, corner) order. The optional is
  // spelled out: a plain `true` would pick the overload sort(self, dim, descending).
  const auto sorted = at::sort(keys, /*stable=*/std::optional<bool>(true), /*dim=*/0,
                               /*descending=*/false);
  const at::Tensor& sorted_keys = std::get<0>(sorted);
  const at::Tensor& order = std::get<1>(sorted);
  // row_begin[r]: the first sorted entry of row r; rows + 1 values, the last ends the final row
  const at::Tensor row_begin = at::searchsorted(sorted_keys, at::arange(rows + 1, keys.options()));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_gather_value_grad", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        gather_value_grad_kernel<scalar_t, acc_t><<<blocks_for(rows, kWarp), kThreads, 0, stream>>>(
            row_begin.const_data_ptr<int64_t>(), order.const_data_ptr<int64_t>(),
            coefs.const_data_ptr<acc_t>(), grad_output.const_data_ptr<scalar_t>(),
            grad_value.data_ptr<scalar_t>(), s);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return grad_value;
}

// Gradients of the sampling locations and attention weights, and (kScatterValue) grad_value
// accumulated atomically into `grad_value` (opmath dtype; unused otherwise).
template <bool kScatterValue>
void launch_backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                     const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                     const at::Tensor& attention_weights, const at::Tensor& grad_output,
                     at::Tensor& grad_value, at::Tensor& grad_loc, at::Tensor& grad_attn,
                     const Sizes& s) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        backward_kernel<scalar_t, acc_t, kScatterValue><<<num_blocks(s), kThreads, 0, stream>>>(
            value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
            level_start_index.const_data_ptr<int64_t>(),
            sampling_locations.const_data_ptr<acc_t>(),
            attention_weights.const_data_ptr<scalar_t>(), grad_output.const_data_ptr<scalar_t>(),
            kScatterValue ? grad_value.data_ptr<acc_t>() : nullptr, grad_loc.data_ptr<acc_t>(),
            grad_attn.data_ptr<scalar_t>(), s);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

}  // namespace

std::vector<at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights, const at::Tensor& grad_output, bool deterministic) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights, at::kCUDA);
  check_cuda_dtypes(value, sampling_locations, attention_weights);
  const Sizes s = sizes_of(value, sampling_locations);
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({s.batch, s.queries, s.heads * s.channels}) &&
                  grad_output.scalar_type() == value.scalar_type() &&
                  grad_output.is_contiguous() && grad_output.is_cuda(),
              "ms_deform_attn: grad_output must be a contiguous CUDA (N, Lq, M*D) tensor of "
              "value's dtype, got ", grad_output.sizes());
  const c10::cuda::CUDAGuard guard(value.device());
  at::Tensor grad_loc = at::zeros_like(sampling_locations);
  at::Tensor grad_attn = at::zeros_like(attention_weights);
  if (deterministic) {
    if (grad_output.numel() > 0) {
      at::Tensor unused;
      launch_backward<false>(value, spatial_shapes, level_start_index, sampling_locations,
                             attention_weights, grad_output, unused, grad_loc, grad_attn, s);
    }
    at::Tensor grad_value = deterministic_value_grad(value, spatial_shapes, level_start_index,
                                                     sampling_locations, attention_weights,
                                                     grad_output, s);
    return {grad_value, grad_loc, grad_attn};
  }
  const auto acc_dtype = value.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor grad_value = at::zeros(value.sizes(), value.options().dtype(acc_dtype));
  if (grad_output.numel() > 0) {
    launch_backward<true>(value, spatial_shapes, level_start_index, sampling_locations,
                          attention_weights, grad_output, grad_value, grad_loc, grad_attn, s);
  }
  return {grad_value.to(value.scalar_type()), grad_loc, grad_attn};
}

}  // namespace mask2former
