// LM-Net's 2D neighborhood attention as one OpenVINO operation (CPU, float32), for the traced LFTs of
// bundle.networks.blocks.neighborhood_attention. Built at run time by bundle/openvino_kernels/__init__.py.
//
// Input 0, qkv: (B, 3, heads, d, H, W) float32, planar; q, k and v of every head as d planes of H x W.
// Input 1, settings: 3 floats (kh, kw, scale): the window (kh <= H, kw <= W) and the logit scale (> 0).
// Input 2, bias: (3, heads, d) float32, the q/k/v projection's bias, not yet added to input 0.
// Output: (B, heads, d, H, W), softmax(scale * q . k)-weighted sums of v over each pixel's kh x kw window (q, k, v
// with their bias), the window shifted inward at the border as in NATTEN: along an axis of length n the window of
// pixel i starts at clamp(i - k / 2, 0, n - k). The bias of k adds q . b_k to all of a pixel's logits alike, which
// the softmax cancels, so it is not read; the weights sum to 1, so the bias of v is added to the output once.
//
// Work: per pixel, kh * kw logits (d products each), their softmax, and d weighted sums of kh * kw values, all
// in registers; q, k and v are read once per row from cache and the output written once. Interior pixels go
// 16 at a time (kh = kw = 3, 5 or 7); border columns and other windows one at a time.

#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/frontend/pytorch/extension/op.hpp>
#include <openvino/op/op.hpp>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

constexpr int kLanes = 16;  // interior pixels per step

// Vectors of kLanes floats (GCC / Clang vector extensions: one AVX-512 register, or two AVX ones, as the
// target allows).
typedef float Floats __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t Ints __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline Floats load(const float* p) {
    Floats v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}

inline void store(float* p, Floats v) { std::memcpy(p, &v, sizeof(v)); }

// e^x for x <= 0, to float precision: x = n ln2 + r with |r| <= ln2 / 2, e^r by its degree-6 Taylor polynomial
// (relative error < 2e-7), times 2^n set in the exponent bits. Below -87.3 it returns about 1e-38 (a softmax term
// that small is zero to float precision beside the largest, which is 1). T is float or Floats: the same arithmetic
// lane by lane.
template <typename T, typename I>
inline T exp_nonpositive(T x) {
    const T floor_value = x * 0.0f - 87.3f;
    x = x < floor_value ? floor_value : x;
    const T n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest: 1.5 * 2^23
    const T r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
    T p = r * (1.0f / 720.0f) + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    I bits;
    if constexpr (std::is_same_v<T, float>) {
        bits = (static_cast<int32_t>(n) + 127) << 23;
    } else {
        bits = (__builtin_convertvector(n, Ints) + 127) << 23;
    }
    T two_n;
    std::memcpy(&two_n, &bits, sizeof(two_n));
    return p * two_n;
}

inline int64_t window_start(int64_t i, int64_t k, int64_t n) {
    return std::min(std::max(i - k / 2, int64_t(0)), n - k);
}

struct Head {
    const float* q;
    const float* k;
    const float* v;
    float* out;
    const float* q_bias;  // d floats each
    const float* v_bias;
    int64_t d, h, w;  // channels per head, rows, columns
};

// One pixel (row i, column x), any window: logits, softmax and weighted sums. ``weights`` holds kh * kw floats.
void attend_pixel(const Head& t, int64_t i, int64_t x, int64_t kh, int64_t kw, float scale, float* weights) {
    const int64_t plane = t.h * t.w, r0 = window_start(i, kh, t.h), c0 = window_start(x, kw, t.w);
    const int64_t n = kh * kw;
    for (int64_t o = 0; o < n; ++o) {
        const int64_t key = (r0 + o / kw) * t.w + c0 + o % kw;
        float acc = 0.0f;
        for (int64_t c = 0; c < t.d; ++c) acc += (t.q[c * plane + i * t.w + x] + t.q_bias[c]) * t.k[c * plane + key];
        weights[o] = acc * scale;
    }
    float top = weights[0];
    for (int64_t o = 1; o < n; ++o) top = std::max(top, weights[o]);
    float total = 0.0f;
    for (int64_t o = 0; o < n; ++o) {
        weights[o] = exp_nonpositive<float, int32_t>(weights[o] - top);
        total += weights[o];
    }
    const float inv = 1.0f / total;
    for (int64_t c = 0; c < t.d; ++c) {
        float acc = 0.0f;
        for (int64_t o = 0; o < n; ++o) acc += weights[o] * t.v[c * plane + (r0 + o / kw) * t.w + c0 + o % kw];
        t.out[c * plane + i * t.w + x] = acc * inv + t.v_bias[c];
    }
}

// kLanes interior pixels of row i from column x on (window columns x - K/2 ... x + K/2 + kLanes - 1, all inside the
// row), a K x K window starting at row r0.
template <int K>
void attend_lanes(const Head& t, int64_t i, int64_t x, int64_t r0, float scale) {
    const int64_t plane = t.h * t.w;
    Floats logit[K * K] = {};
    for (int64_t c = 0; c < t.d; ++c) {
        const Floats qc = load(t.q + c * plane + i * t.w + x) + t.q_bias[c];
        const float* kc = t.k + c * plane + r0 * t.w + x - K / 2;
        for (int a = 0; a < K; ++a)
            for (int b = 0; b < K; ++b) logit[a * K + b] += qc * load(kc + a * t.w + b);
    }
    Floats top = logit[0];
    for (int o = 1; o < K * K; ++o) top = logit[o] > top ? logit[o] : top;
    Floats total = {};
    for (int o = 0; o < K * K; ++o) {
        logit[o] = exp_nonpositive<Floats, Ints>((logit[o] - top) * scale);
        total += logit[o];
    }
    const Floats inv = 1.0f / total;
    for (int64_t c = 0; c < t.d; ++c) {
        const float* vc = t.v + c * plane + r0 * t.w + x - K / 2;
        Floats acc = {};
        for (int a = 0; a < K; ++a)
            for (int b = 0; b < K; ++b) acc += logit[a * K + b] * load(vc + a * t.w + b);
        store(t.out + c * plane + i * t.w + x, acc * inv + t.v_bias[c]);
    }
}

// Rows [row_begin, row_end) of one head.
template <int K>
void attend_rows(const Head& t, int64_t kh, int64_t kw, float scale, int64_t row_begin, int64_t row_end) {
    std::vector<float> weights(static_cast<size_t>(kh * kw));
    // interior columns: their window lies whole inside the row, unshifted (x - kw/2 >= 0, x + kw/2 < w)
    const int64_t lo = kw / 2, hi = t.w - kw / 2;
    for (int64_t i = row_begin; i < row_end; ++i) {
        int64_t x = 0;
        if (K > 0) {
            const int64_t r0 = window_start(i, kh, t.h);
            for (; x < lo; ++x) attend_pixel(t, i, x, kh, kw, scale, weights.data());
            for (; x + kLanes <= hi; x += kLanes) attend_lanes<K>(t, i, x, r0, scale);
            if (x < hi) {  // the last interior pixels: one more step ending at hi, overlapping the previous one
                attend_lanes<K>(t, i, hi - kLanes, r0, scale);
                x = hi;
            }
        }
        for (; x < t.w; ++x) attend_pixel(t, i, x, kh, kw, scale, weights.data());
    }
}

void attend_head_rows(const Head& t, int64_t kh, int64_t kw, float scale, int64_t row_begin, int64_t row_end) {
    const bool lanes = kh == kw && t.w >= kw + kLanes;
    if (lanes && kh == 3) return attend_rows<3>(t, kh, kw, scale, row_begin, row_end);
    if (lanes && kh == 5) return attend_rows<5>(t, kh, kw, scale, row_begin, row_end);
    if (lanes && kh == 7) return attend_rows<7>(t, kh, kw, scale, row_begin, row_end);
    attend_rows<0>(t, kh, kw, scale, row_begin, row_end);
}

}  // namespace

class NeighborhoodAttention2D : public ov::op::Op {
public:
    OPENVINO_OP("NeighborhoodAttention2D", "lmnet");

    NeighborhoodAttention2D() = default;
    NeighborhoodAttention2D(const ov::Output<ov::Node>& qkv, const ov::Output<ov::Node>& settings,
                            const ov::Output<ov::Node>& bias)
        : Op({qkv, settings, bias}) {
        constructor_validate_and_infer_types();
    }

    void validate_and_infer_types() override {
        const auto& shape = get_input_partial_shape(0);
        ov::PartialShape out = ov::PartialShape::dynamic(5);
        if (shape.rank().is_static()) {
            NODE_VALIDATION_CHECK(this, shape.rank().get_length() == 6 && shape[1].compatible(3),
                                  "qkv must be (B, 3, heads, d, H, W), got ", shape);
            out = ov::PartialShape{shape[0], shape[2], shape[3], shape[4], shape[5]};
        }
        set_output_type(0, get_input_element_type(0), out);
    }

    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
        OPENVINO_ASSERT(args.size() == 3, "NeighborhoodAttention2D takes 3 inputs, got ", args.size());
        return std::make_shared<NeighborhoodAttention2D>(args[0], args[1], args[2]);
    }

    bool visit_attributes(ov::AttributeVisitor&) override { return true; }

    bool has_evaluate() const override { return get_input_element_type(0) == ov::element::f32; }

    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
        const ov::Shape shape = inputs[0].get_shape();
        const float* settings = inputs[1].data<const float>();
        const int64_t kh = static_cast<int64_t>(settings[0]), kw = static_cast<int64_t>(settings[1]);
        const float scale = settings[2];
        const int64_t batch = shape[0], heads = shape[2], d = shape[3], h = shape[4], w = shape[5];
        OPENVINO_ASSERT(kh >= 1 && kh <= h && kw >= 1 && kw <= w, "window ", kh, " x ", kw, " larger than the map");
        OPENVINO_ASSERT(scale > 0.0f, "the logit scale must be positive, got ", scale);  // the softmax's max relies on it
        OPENVINO_ASSERT(inputs[2].get_size() == static_cast<size_t>(3 * heads * d), "bias must hold 3 x heads x d");
        const float* bias = inputs[2].data<const float>();
        outputs[0].set_shape({shape[0], shape[2], shape[3], shape[4], shape[5]});
        const float* qkv = inputs[0].data<const float>();
        float* out = outputs[0].data<float>();
        const int64_t head_size = d * h * w;
        // tasks: (batch, head, block of rows); enough blocks that every thread gets work at batch 1
        const int64_t blocks = std::min<int64_t>(h, 16), rows = (h + blocks - 1) / blocks;
        tbb::parallel_for(tbb::blocked_range<int64_t>(0, batch * heads * blocks), [&](const tbb::blocked_range<int64_t>& r) {
            for (int64_t task = r.begin(); task < r.end(); ++task) {
                const int64_t bh = task / blocks, first = (task % blocks) * rows;
                const int64_t b = bh / heads, hd = bh % heads;
                const Head t{qkv + ((b * 3 + 0) * heads + hd) * head_size, qkv + ((b * 3 + 1) * heads + hd) * head_size,
                             qkv + ((b * 3 + 2) * heads + hd) * head_size, out + bh * head_size,
                             bias + hd * d, bias + (2 * heads + hd) * d, d, h, w};
                if (first < h) attend_head_rows(t, kh, kw, scale, first, std::min(h, first + rows));
            }
        });
        return true;
    }
};

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>({
    std::make_shared<ov::OpExtension<NeighborhoodAttention2D>>(),
    std::make_shared<ov::frontend::pytorch::OpExtension<NeighborhoodAttention2D>>("lmnet::neighborhood_attention_2d"),
}));
