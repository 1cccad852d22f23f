// The CPU kernel's loops, templated on the scalar type. Included by ms_deform_attn_cpu.cpp
// twice: once for the baseline instruction set and once inside a target("avx2,fma") region,
// each time in its own namespace. No #include here on purpose.

// Geometry of one call.
struct Sizes {
  int64_t batch, num_values, heads, channels, queries, levels, points;
};

// Bilinear footprint of one sampling location on one level: four corners (-1 where the corner
// lies outside the level, which then contributes zero) and the fractional offsets.
template <typename scalar_t>
struct Footprint {
  int64_t position[4];  // y * W + x of corners (y0,x0), (y0,x1), (y1,x0), (y1,x1)
  scalar_t weight[4];
  scalar_t fx, fy;
};

// Returns false when no corner touches the level (nothing to sample, zero gradient).
template <typename scalar_t>
inline bool bilinear_footprint(scalar_t loc_x, scalar_t loc_y, int64_t height, int64_t width,
                               Footprint<scalar_t>& f) {
  const scalar_t x = loc_x * static_cast<scalar_t>(width) - static_cast<scalar_t>(0.5);
  const scalar_t y = loc_y * static_cast<scalar_t>(height) - static_cast<scalar_t>(0.5);
  const scalar_t x0f = std::floor(x);
  const scalar_t y0f = std::floor(y);
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

// out[0:D] += c0 * v0 + c1 * v1 + c2 * v2 + c3 * v3 (restrict parameters so it vectorises).
template <typename scalar_t>
inline void accumulate_corners(scalar_t* __restrict out, const scalar_t* __restrict v0,
                               const scalar_t* __restrict v1, const scalar_t* __restrict v2,
                               const scalar_t* __restrict v3, const scalar_t c[4], int64_t D) {
  const scalar_t c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
  for (int64_t d = 0; d < D; ++d) out[d] += c0 * v0[d] + c1 * v1[d] + c2 * v2[d] + c3 * v3[d];
}

// out[0:D] = sum over levels and points of attention * bilinear sample, for one (n, q, m).
// `value` points at head m of batch element n; positions are `stride` apart; `zeros` holds D zeros.
template <typename scalar_t>
void forward_one_query(const scalar_t* __restrict value, int64_t stride,
                       const int64_t* spatial_shapes, const int64_t* level_start_index,
                       const scalar_t* loc, const scalar_t* attn, const Sizes& s,
                       const scalar_t* zeros, scalar_t* __restrict out) {
  const int64_t D = s.channels;
  for (int64_t d = 0; d < D; ++d) out[d] = 0;
  Footprint<scalar_t> f;
  for (int64_t l = 0; l < s.levels; ++l) {
    const int64_t h = spatial_shapes[2 * l], w = spatial_shapes[2 * l + 1];
    const scalar_t* level = value + level_start_index[l] * stride;
    for (int64_t p = 0; p < s.points; ++p, loc += 2, ++attn) {
      if (!bilinear_footprint(loc[0], loc[1], h, w, f)) continue;
      const scalar_t* v[4];
      scalar_t c[4];
      for (int k = 0; k < 4; ++k) {
        v[k] = f.position[k] >= 0 ? level + f.position[k] * stride : zeros;
        c[k] = *attn * f.weight[k];
      }
      accumulate_corners(out, v[0], v[1], v[2], v[3], c, D);
    }
  }
}

// Dot products over the D channels of one sample, needed by the backward pass.
template <typename scalar_t>
struct SampleGrads {
  scalar_t attn, x, y;  // d out / d attention, d out / d fx, d out / d fy (before scaling)
};

// Backward of one sample: returns the dot products of grad_out with the sample and its
// derivatives (accumulated in 8 lanes so the loop vectorises), then adds attn * weight * grad_out
// to the four grad_value rows (`scratch` stands in for absent corners).
template <typename scalar_t>
SampleGrads<scalar_t> backward_one_sample(const scalar_t* const v[4], scalar_t* const gv[4],
                                          const scalar_t* __restrict g,
                                          const Footprint<scalar_t>& f, scalar_t attn,
                                          int64_t D) {
  constexpr int kLanes = 8;
  scalar_t acc_attn[kLanes] = {0}, acc_x[kLanes] = {0}, acc_y[kLanes] = {0};
  const scalar_t* __restrict v0 = v[0];
  const scalar_t* __restrict v1 = v[1];
  const scalar_t* __restrict v2 = v[2];
  const scalar_t* __restrict v3 = v[3];
  const scalar_t fx = f.fx, fy = f.fy;
  int64_t d = 0;
  for (; d + kLanes <= D; d += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const scalar_t top = v0[d + j] + fx * (v1[d + j] - v0[d + j]);
      const scalar_t bottom = v2[d + j] + fx * (v3[d + j] - v2[d + j]);
      const scalar_t dx = (1 - fy) * (v1[d + j] - v0[d + j]) + fy * (v3[d + j] - v2[d + j]);
      acc_attn[j] += g[d + j] * (top + fy * (bottom - top));
      acc_x[j] += g[d + j] * dx;
      acc_y[j] += g[d + j] * (bottom - top);
    }
  }
  for (; d < D; ++d) {  // remainder when D is not a multiple of the lane count
    const scalar_t top = v0[d] + fx * (v1[d] - v0[d]), bottom = v2[d] + fx * (v3[d] - v2[d]);
    acc_attn[0] += g[d] * (top + fy * (bottom - top));
    acc_x[0] += g[d] * ((1 - fy) * (v1[d] - v0[d]) + fy * (v3[d] - v2[d]));
    acc_y[0] += g[d] * (bottom - top);
  }
  for (int k = 0; k < 4; ++k) {
    scalar_t* __restrict out = gv[k];
    const scalar_t c = attn * f.weight[k];
    for (int64_t i = 0; i < D; ++i) out[i] += c * g[i];
  }
  SampleGrads<scalar_t> r{0, 0, 0};
  for (int j = 0; j < kLanes; ++j) {
    r.attn += acc_attn[j];
    r.x += acc_x[j];
    r.y += acc_y[j];
  }
  return r;
}

// Backward of one (n, m) pair over queries [q_begin, q_end); writes every grad_loc and grad_attn
// entry of those queries and accumulates into grad_value. `value` / `grad_value` point at
// head m of batch element n (positions `stride` apart); `scratch` (D entries) absorbs writes for
// absent corners. Query q's loc / attn / grad rows are at q * M * L * P (* 2) from the given
// pointers.
template <typename scalar_t>
void backward_queries(const scalar_t* value, scalar_t* grad_value, int64_t stride,
                      const int64_t* spatial_shapes, const int64_t* level_start_index,
                      const scalar_t* loc, const scalar_t* attn, const scalar_t* grad_out,
                      scalar_t* grad_loc, scalar_t* grad_attn, int64_t q_begin, int64_t q_end,
                      const Sizes& s, const scalar_t* zeros, scalar_t* scratch) {
  const int64_t samples = s.levels * s.points;
  const int64_t query_stride = s.heads * samples;  // between queries, in samples
  Footprint<scalar_t> f;
  for (int64_t q = q_begin; q < q_end; ++q) {
    const scalar_t* q_loc = loc + q * query_stride * 2;
    const scalar_t* q_attn = attn + q * query_stride;
    const scalar_t* g = grad_out + q * s.heads * s.channels;
    scalar_t* q_grad_loc = grad_loc + q * query_stride * 2;
    scalar_t* q_grad_attn = grad_attn + q * query_stride;
    for (int64_t l = 0; l < s.levels; ++l) {
      const int64_t h = spatial_shapes[2 * l], w = spatial_shapes[2 * l + 1];
      const int64_t level_offset = level_start_index[l] * stride;
      for (int64_t p = 0; p < s.points; ++p) {
        const int64_t i = l * s.points + p;
        if (!bilinear_footprint(q_loc[2 * i], q_loc[2 * i + 1], h, w, f)) {
          q_grad_attn[i] = q_grad_loc[2 * i] = q_grad_loc[2 * i + 1] = 0;
          continue;
        }
        const scalar_t* v[4];
        scalar_t* gv[4];
        for (int k = 0; k < 4; ++k) {
          const bool inside = f.position[k] >= 0;
          v[k] = inside ? value + level_offset + f.position[k] * stride : zeros;
          gv[k] = inside ? grad_value + level_offset + f.position[k] * stride : scratch;
        }
        const scalar_t a = q_attn[i];
        const SampleGrads<scalar_t> r = backward_one_sample(v, gv, g, f, a, s.channels);
        q_grad_attn[i] = r.attn;
        // d fx / d loc_x = W, d fy / d loc_y = H
        q_grad_loc[2 * i] = a * static_cast<scalar_t>(w) * r.x;
        q_grad_loc[2 * i + 1] = a * static_cast<scalar_t>(h) * r.y;
      }
    }
  }
}
