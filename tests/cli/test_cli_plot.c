/* tests/cli/test_cli_plot.c - the PNG encoder and the line plot of
 * `tessera-cli train` (launcher/cli_plot.h): images encoded, then decoded
 * here by hand (chunks, CRCs with zlib's crc32, IDAT with uncompress) and
 * compared pixel for pixel; plots checked for size, colours and where the
 * curve lies. Exits 0, or 1 at the first failed check. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "launcher/cli_plot.h"
#include "tests/common/check.h"

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Decodes a PNG the encoder wrote (RGB8, filter 0) into a malloc'd (h, w, 3)
 * buffer, checking every chunk's CRC and the layout on the way. */
static uint8_t *decode(const uint8_t *png, size_t len, int *w, int *h) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    CHECK(len > 8 && memcmp(png, sig, 8) == 0);
    size_t pos = 8, idat_len = 0;
    uint8_t *idat = NULL;
    int n_chunks = 0, seen_end = 0;
    while (pos < len) {
        CHECK(pos + 12 <= len && !seen_end);
        uint32_t n = be32(png + pos);
        const uint8_t *type = png + pos + 4, *body = png + pos + 8;
        CHECK(pos + 12 + n <= len);
        uLong crc = crc32(crc32(0L, Z_NULL, 0), type, 4 + n);
        CHECK(crc == be32(body + n));
        if (n_chunks == 0) {
            CHECK(memcmp(type, "IHDR", 4) == 0 && n == 13);
            *w = (int)be32(body);
            *h = (int)be32(body + 4);
            CHECK(body[8] == 8 && body[9] == 2 && body[10] == 0 && body[11] == 0 && body[12] == 0);
        } else if (memcmp(type, "IDAT", 4) == 0) {
            idat = realloc(idat, idat_len + n);
            CHECK(idat);
            memcpy(idat + idat_len, body, n);
            idat_len += n;
        } else {
            CHECK(memcmp(type, "IEND", 4) == 0 && n == 0);
            seen_end = 1;
        }
        n_chunks++;
        pos += 12 + n;
    }
    CHECK(seen_end && idat_len > 0);
    size_t stride = 1 + 3 * (size_t)*w;
    uLongf raw_len = stride * (size_t)*h + 1; /* one spare byte: a longer stream fails */
    uint8_t *raw = malloc(raw_len);
    CHECK(raw);
    CHECK(uncompress(raw, &raw_len, idat, idat_len) == Z_OK);
    CHECK(raw_len == stride * (size_t)*h);
    uint8_t *rgb = malloc(3 * (size_t)*w * (size_t)*h);
    CHECK(rgb);
    for (int y = 0; y < *h; y++) {
        CHECK(raw[(size_t)y * stride] == 0);
        memcpy(rgb + (size_t)y * 3 * (size_t)*w, raw + (size_t)y * stride + 1, 3 * (size_t)*w);
    }
    free(raw);
    free(idat);
    return rgb;
}

static void test_png_round_trip(void) {
    const int sizes[][2] = {{1, 1}, {13, 7}, {64, 3}, {300, 200}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int w = sizes[s][0], h = sizes[s][1];
        uint8_t *img = malloc(3 * (size_t)w * (size_t)h);
        CHECK(img);
        uint32_t x = 12345u + (uint32_t)s;
        for (size_t i = 0; i < 3 * (size_t)w * (size_t)h; i++) {
            x = x * 1664525u + 1013904223u;
            img[i] = (uint8_t)(x >> 24);
        }
        uint8_t *png;
        size_t len;
        CHECK(tsr_cli_png_encode(img, w, h, &png, &len) == 0 && png && len > 8);
        int dw = 0, dh = 0;
        uint8_t *back = decode(png, len, &dw, &dh);
        CHECK(dw == w && dh == h);
        CHECK(memcmp(back, img, 3 * (size_t)w * (size_t)h) == 0);
        free(back);
        free(png);
        free(img);
    }
    uint8_t px[3] = {1, 2, 3}, *png = (uint8_t *)1;
    size_t len = 7;
    CHECK(tsr_cli_png_encode(px, 0, 1, &png, &len) == -1 && png == NULL && len == 0);
    CHECK(tsr_cli_png_encode(px, 1, 20000, &png, &len) == -1 && png == NULL);
    CHECK(tsr_cli_png_encode(NULL, 1, 1, &png, &len) == -1);
}

static int is_curve(const uint8_t *p) {
    return p[0] == TSR_CLI_PLOT_CURVE_R && p[1] == TSR_CLI_PLOT_CURVE_G &&
           p[2] == TSR_CLI_PLOT_CURVE_B;
}

/* The mean row of the curve's pixels in columns x0..x1, -1 when none. */
static double curve_row(const uint8_t *rgb, int w, int h, int x0, int x1) {
    double sum = 0;
    long n = 0;
    for (int y = 0; y < h; y++)
        for (int x = x0; x <= x1; x++)
            if (is_curve(rgb + ((size_t)y * (size_t)w + (size_t)x) * 3)) {
                sum += y;
                n++;
            }
    return n ? sum / (double)n : -1;
}

static void test_plot(void) {
    enum { N = 50 };
    double x[N], y[N];
    for (int i = 0; i < N; i++) {
        x[i] = i + 1;
        y[i] = 0.3 + 2.7 * pow(0.9, i);
    }
    tsr_cli_plot_opts o = {.width = 640,
                           .height = 400,
                           .title = "training loss",
                           .x_label = "step",
                           .y_label = "loss"};
    uint8_t *rgb;
    CHECK(tsr_cli_plot_line(x, y, N, &o, &rgb) == 0 && rgb);
    long curve = 0, dark = 0, white = 0;
    int cx0 = o.width, cx1 = -1;
    for (int yy = 0; yy < o.height; yy++)
        for (int xx = 0; xx < o.width; xx++) {
            const uint8_t *p = rgb + ((size_t)yy * (size_t)o.width + (size_t)xx) * 3;
            if (is_curve(p)) {
                curve++;
                cx0 = xx < cx0 ? xx : cx0;
                cx1 = xx > cx1 ? xx : cx1;
            } else if (p[0] == 255 && p[1] == 255 && p[2] == 255) {
                white++;
            } else if (p[0] < 90 && p[1] < 90 && p[2] < 90) {
                dark++;
            }
        }
    CHECK(curve > 500); /* the line and its markers */
    CHECK(dark > 1000); /* axes, ticks, labels */
    CHECK(white > (long)o.width * o.height / 2);
    CHECK(cx1 - cx0 > o.width / 2); /* the curve spans the plot */
    /* a falling loss: the curve starts high (small rows) and ends low */
    double left = curve_row(rgb, o.width, o.height, cx0, cx0 + 10);
    double right = curve_row(rgb, o.width, o.height, cx1 - 10, cx1);
    CHECK(left >= 0 && right >= 0 && left + 100 < right);
    /* the plot encodes */
    uint8_t *png;
    size_t len;
    CHECK(tsr_cli_png_encode(rgb, o.width, o.height, &png, &len) == 0);
    int w, h;
    uint8_t *back = decode(png, len, &w, &h);
    CHECK(w == o.width && h == o.height && memcmp(back, rgb, 3 * (size_t)w * (size_t)h) == 0);
    free(back);
    free(png);
    free(rgb);

    /* edge cases draw without failing: one point, a flat line, no point,
     * points that are not finite, a small canvas, no labels */
    double one_x = 1, one_y = 2.5;
    CHECK(tsr_cli_plot_line(&one_x, &one_y, 1, &o, &rgb) == 0);
    free(rgb);
    double flat[3] = {1, 1, 1}, xs[3] = {1, 2, 3};
    CHECK(tsr_cli_plot_line(xs, flat, 3, &o, &rgb) == 0);
    free(rgb);
    CHECK(tsr_cli_plot_line(NULL, NULL, 0, &o, &rgb) == 0);
    free(rgb);
    double odd[4] = {NAN, 1.0, INFINITY, 0.5}, oxs[4] = {1, 2, 3, 4};
    CHECK(tsr_cli_plot_line(oxs, odd, 4, &o, &rgb) == 0);
    free(rgb);
    tsr_cli_plot_opts small = {.width = 160, .height = 120};
    CHECK(tsr_cli_plot_line(x, y, N, &small, &rgb) == 0);
    free(rgb);
    double big[2] = {1e9, 3e9}, tiny[2] = {1e-9, 3e-9};
    CHECK(tsr_cli_plot_line(xs, big, 2, &o, &rgb) == 0);
    free(rgb);
    CHECK(tsr_cli_plot_line(xs, tiny, 2, &o, &rgb) == 0);
    free(rgb);
    tsr_cli_plot_opts bad = {.width = 100, .height = 400};
    rgb = (uint8_t *)1;
    CHECK(tsr_cli_plot_line(x, y, N, &bad, &rgb) == -1 && rgb == NULL);
}

int main(void) {
    test_png_round_trip();
    test_plot();
    puts("test_cli_plot: ok");
    return 0;
}
