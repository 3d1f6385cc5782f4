/* launcher/cli_plot.c - a line plot into an RGB canvas and its PNG encoding
 * (see cli_plot.h). The PNG is the smallest valid one: signature, IHDR, one
 * IDAT of zlib-compressed rows (each with filter byte 0), IEND. */
#include "launcher/cli_plot.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

/* ---- PNG ------------------------------------------------------------------ */

#define PNG_MAX_SIDE 16384

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Writes one chunk (length, type, data, CRC of type and data) at p and
 * returns the byte after it. */
static uint8_t *put_chunk(uint8_t *p, const char type[4], const uint8_t *data, size_t len) {
    put_be32(p, (uint32_t)len);
    memcpy(p + 4, type, 4);
    if (len)
        memcpy(p + 8, data, len);
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, p + 4, (uInt)(len + 4));
    put_be32(p + 8 + len, (uint32_t)crc);
    return p + 12 + len;
}

int tsr_cli_png_encode(const uint8_t *rgb, int w, int h, uint8_t **png, size_t *len) {
    *png = NULL;
    *len = 0;
    if (!rgb || w < 1 || h < 1 || w > PNG_MAX_SIDE || h > PNG_MAX_SIDE)
        return -1;
    const size_t row = 1 + 3 * (size_t)w, raw_len = row * (size_t)h;
    uint8_t *raw = malloc(raw_len);
    uLongf z_len = compressBound((uLong)raw_len);
    uint8_t *z = malloc(z_len);
    uint8_t *out = NULL;
    int rc = -1;
    if (!raw || !z)
        goto cleanup;
    for (int y = 0; y < h; y++) {
        raw[(size_t)y * row] = 0; /* filter: none */
        memcpy(raw + (size_t)y * row + 1, rgb + (size_t)y * 3 * (size_t)w, 3 * (size_t)w);
    }
    if (compress2(z, &z_len, raw, (uLong)raw_len, Z_BEST_COMPRESSION) != Z_OK)
        goto cleanup;
    if ((uint64_t)z_len > 0x7fffffffu)
        goto cleanup; /* a chunk's length is 31 bits */

    uint8_t ihdr[13];
    put_be32(ihdr, (uint32_t)w);
    put_be32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8;  /* bits per sample */
    ihdr[9] = 2;  /* colour type: RGB */
    ihdr[10] = 0; /* compression: deflate */
    ihdr[11] = 0; /* filter method 0 */
    ihdr[12] = 0; /* no interlace */
    const size_t total = 8 + (12 + sizeof ihdr) + (12 + (size_t)z_len) + 12;
    if (!(out = malloc(total)))
        goto cleanup;
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(out, sig, sizeof sig);
    uint8_t *p = out + sizeof sig;
    p = put_chunk(p, "IHDR", ihdr, sizeof ihdr);
    p = put_chunk(p, "IDAT", z, (size_t)z_len);
    p = put_chunk(p, "IEND", NULL, 0);
    *png = out;
    *len = (size_t)(p - out);
    out = NULL;
    rc = 0;
cleanup:
    free(out);
    free(z);
    free(raw);
    return rc;
}

/* ---- the font: 5x7 on a baseline below row 6, with two rows of descenders
 * (g, j, p, q, y); one byte per row, bit 4 = the leftmost column ------------- */

#define GLYPH_ROWS 9

static const uint8_t k_digits[10][GLYPH_ROWS] = {
    {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}, {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E},
    {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}, {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E},
    {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}, {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E},
    {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}, {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08},
    {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}, {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C},
};

static const uint8_t k_lower[26][GLYPH_ROWS] = {
    {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F},             /* a */
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E},             /* b */
    {0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E},             /* c */
    {0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F},             /* d */
    {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E},             /* e */
    {0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08},             /* f */
    {0x00, 0x00, 0x0F, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x0E}, /* g */
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11},             /* h */
    {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E},             /* i */
    {0x02, 0x00, 0x06, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}, /* j */
    {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12},             /* k */
    {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E},             /* l */
    {0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11},             /* m */
    {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11},             /* n */
    {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E},             /* o */
    {0x00, 0x00, 0x1E, 0x11, 0x11, 0x11, 0x1E, 0x10, 0x10}, /* p */
    {0x00, 0x00, 0x0F, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x01}, /* q */
    {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10},             /* r */
    {0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E},             /* s */
    {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06},             /* t */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D},             /* u */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04},             /* v */
    {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A},             /* w */
    {0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11},             /* x */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x0E}, /* y */
    {0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F},             /* z */
};

static const uint8_t k_space[GLYPH_ROWS] = {0};
static const uint8_t k_dot[GLYPH_ROWS] = {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C};
static const uint8_t k_minus[GLYPH_ROWS] = {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00};
static const uint8_t k_plus[GLYPH_ROWS] = {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00};
static const uint8_t k_colon[GLYPH_ROWS] = {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00};
static const uint8_t k_lparen[GLYPH_ROWS] = {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02};
static const uint8_t k_rparen[GLYPH_ROWS] = {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08};
static const uint8_t k_slash[GLYPH_ROWS] = {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00};
static const uint8_t k_under[GLYPH_ROWS] = {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F};
static const uint8_t k_box[GLYPH_ROWS] = {0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F};

static const uint8_t *glyph(char c) {
    if (c >= '0' && c <= '9')
        return k_digits[c - '0'];
    if (isalpha((unsigned char)c) && (unsigned char)c < 0x80)
        return k_lower[tolower((unsigned char)c) - 'a'];
    switch (c) {
    case ' ': return k_space;
    case '.': return k_dot;
    case '-': return k_minus;
    case '+': return k_plus;
    case ':': return k_colon;
    case '(': return k_lparen;
    case ')': return k_rparen;
    case '/': return k_slash;
    case '_': return k_under;
    default: return k_box;
    }
}

/* ---- the canvas ------------------------------------------------------------- */

typedef struct {
    uint8_t *px; /* (h, w, 3) */
    int w, h;
} canvas;

typedef struct {
    uint8_t r, g, b;
} rgb_color;

static const rgb_color k_white = {255, 255, 255};
static const rgb_color k_black = {0, 0, 0};
static const rgb_color k_grid = {228, 228, 228};
static const rgb_color k_text = {40, 40, 40};
static const rgb_color k_curve = {TSR_CLI_PLOT_CURVE_R, TSR_CLI_PLOT_CURVE_G, TSR_CLI_PLOT_CURVE_B};

static void put_px(canvas *c, int x, int y, rgb_color col) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h)
        return;
    uint8_t *p = c->px + ((size_t)y * (size_t)c->w + (size_t)x) * 3;
    p[0] = col.r;
    p[1] = col.g;
    p[2] = col.b;
}

static void fill_rect(canvas *c, int x0, int y0, int x1, int y1, rgb_color col) {
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++)
            put_px(c, x, y, col);
}

/* A line from (x0, y0) to (x1, y1), `half` pixels either side (Bresenham). */
static void draw_line(canvas *c, int x0, int y0, int x1, int y1, int half, rgb_color col) {
    int dx = abs(x1 - x0), sx = x0 < x1 ? 1 : -1;
    int dy = -abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    for (;;) {
        fill_rect(c, x0 - half, y0 - half, x0 + half, y0 + half, col);
        if (x0 == x1 && y0 == y1)
            break;
        int e2 = 2 * err;
        if (e2 >= dy) {
            err += dy;
            x0 += sx;
        }
        if (e2 <= dx) {
            err += dx;
            y0 += sy;
        }
    }
}

/* The width in pixels of s at `scale` (glyphs 5 wide, 1 apart). */
static int text_width(const char *s, int scale) {
    size_t n = strlen(s);
    return n ? (int)n * 6 * scale - scale : 0;
}

/* Draws s with its top-left corner at (x, y); vertical = rotated a quarter
 * turn anticlockwise, reading bottom to top from (x, y) as the bottom-left. */
static void draw_text(canvas *c, int x, int y, const char *s, int scale, int vertical,
                      rgb_color col) {
    for (; *s; s++) {
        const uint8_t *g = glyph(*s);
        for (int gy = 0; gy < GLYPH_ROWS; gy++)
            for (int gx = 0; gx < 5; gx++) {
                if (!(g[gy] & (0x10 >> gx)))
                    continue;
                int px = vertical ? x + gy * scale : x + gx * scale;
                int py = vertical ? y - (gx + 1) * scale + 1 : y + gy * scale;
                fill_rect(c, px, py, px + scale - 1, py + scale - 1, col);
            }
        if (vertical)
            y -= 6 * scale;
        else
            x += 6 * scale;
    }
}

/* ---- axes ------------------------------------------------------------------- */

/* 1, 2 or 5 times a power of ten, near span / target. */
static double nice_step(double span, int target) {
    double raw = span / target;
    if (!(raw > 0) || !isfinite(raw))
        return 1.0;
    double mag = pow(10.0, floor(log10(raw)));
    double f = raw / mag;
    return (f < 1.5 ? 1.0 : f < 3.0 ? 2.0 : f < 7.0 ? 5.0 : 10.0) * mag;
}

/* The label of tick value v on an axis with tick spacing `step`: as many
 * decimals as the step needs. */
static void tick_label(double v, double step, char *buf, size_t size) {
    if (fabs(v) < step * 1e-9)
        v = 0.0;
    if (fabs(v) >= 1e7 || step < 1e-6) {
        snprintf(buf, size, "%.3g", v);
        return;
    }
    int dec = 0;
    for (double scaled = step; dec < 6 && fabs(scaled - round(scaled)) > 1e-6 * fmax(1, scaled);
         dec++)
        scaled *= 10.0;
    snprintf(buf, size, "%.*f", dec, v);
}

#define MAX_TICKS 32

typedef struct {
    double lo, hi; /* the axis spans lo..hi */
    double step;
    int n;
    double v[MAX_TICKS];
    char label[MAX_TICKS][24];
} axis;

/* Ticks at the multiples of a's step inside lo..hi. */
static void axis_ticks(axis *a) {
    a->n = 0;
    for (double t = ceil(a->lo / a->step - 1e-9) * a->step;
         t <= a->hi + a->step * 1e-9 && a->n < MAX_TICKS; t += a->step) {
        a->v[a->n] = t;
        tick_label(t, a->step, a->label[a->n], sizeof a->label[a->n]);
        a->n++;
    }
}

int tsr_cli_plot_line(const double *x, const double *y, size_t n, const tsr_cli_plot_opts *opts,
                      uint8_t **rgb) {
    *rgb = NULL;
    const int W = opts->width, H = opts->height;
    if (W < 160 || H < 120 || W > PNG_MAX_SIDE || H > PNG_MAX_SIDE)
        return -1;
    canvas c = {malloc((size_t)W * (size_t)H * 3), W, H};
    if (!c.px)
        return -1;
    fill_rect(&c, 0, 0, W - 1, H - 1, k_white);

    /* the data's extent, finite points only */
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    size_t n_ok = 0;
    int whole_x = 1;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i]) || !isfinite(y[i]))
            continue;
        n_ok++;
        xmin = fmin(xmin, x[i]);
        xmax = fmax(xmax, x[i]);
        ymin = fmin(ymin, y[i]);
        ymax = fmax(ymax, y[i]);
        whole_x &= x[i] == floor(x[i]);
    }
    if (!n_ok) {
        xmin = ymin = 0.0;
        xmax = ymax = 1.0;
    }
    axis ax = {.lo = xmin, .hi = xmax}, ay = {.lo = ymin, .hi = ymax};
    if (ax.hi - ax.lo <= 0) {
        ax.lo -= 1.0;
        ax.hi += 1.0;
    }
    ax.step = nice_step(ax.hi - ax.lo, 6);
    if (whole_x && ax.step < 1.0)
        ax.step = 1.0;
    axis_ticks(&ax);
    double span = ay.hi - ay.lo;
    if (span <= 1e-12 * fmax(1.0, fabs(ay.hi))) {
        double pad = ay.hi != 0 ? fabs(ay.hi) * 0.05 : 0.5;
        ay.lo -= pad;
        ay.hi += pad;
    } else {
        /* a margin, but never below zero for data that is not (a loss) */
        ay.lo = ymin >= 0 && ay.lo - span * 0.05 < 0 ? 0.0 : ay.lo - span * 0.05;
        ay.hi += span * 0.05;
    }
    ay.step = nice_step(ay.hi - ay.lo, 5);
    ay.lo = floor(ay.lo / ay.step) * ay.step;
    ay.hi = ceil(ay.hi / ay.step) * ay.step;
    axis_ticks(&ay);

    /* layout: the plot area is left..right x top..bottom */
    const int s = W >= 480 && H >= 320 ? 2 : 1, ch = 7 * s;
    int label_w = 0;
    for (int i = 0; i < ay.n; i++)
        label_w = label_w > text_width(ay.label[i], s) ? label_w : text_width(ay.label[i], s);
    const int left = 8 + (opts->y_label ? ch + 10 : 0) + label_w + 10;
    const int last_w = ax.n ? text_width(ax.label[ax.n - 1], s) : 0;
    const int right = W - 1 - (last_w / 2 + 10 > 16 ? last_w / 2 + 10 : 16);
    const int top = opts->title ? 10 + ch + 12 : 14;
    const int bottom = H - 1 - (8 + ch + 8 + (opts->x_label ? ch + 8 : 0));
    if (right - left < 40 || bottom - top < 40) {
        free(c.px);
        return -1;
    }
#define MAP_X(v) (left + (int)lround(((v)-ax.lo) / (ax.hi - ax.lo) * (right - left)))
#define MAP_Y(v) (bottom - (int)lround(((v)-ay.lo) / (ay.hi - ay.lo) * (bottom - top)))

    /* grid, frame, ticks and their labels */
    for (int i = 0; i < ax.n; i++)
        draw_line(&c, MAP_X(ax.v[i]), top, MAP_X(ax.v[i]), bottom, 0, k_grid);
    for (int i = 0; i < ay.n; i++)
        draw_line(&c, left, MAP_Y(ay.v[i]), right, MAP_Y(ay.v[i]), 0, k_grid);
    draw_line(&c, left, top, right, top, 0, k_grid);
    draw_line(&c, right, top, right, bottom, 0, k_grid);
    draw_line(&c, left, bottom, right, bottom, 0, k_black);
    draw_line(&c, left, top, left, bottom, 0, k_black);
    for (int i = 0; i < ax.n; i++) {
        int px = MAP_X(ax.v[i]);
        draw_line(&c, px, bottom, px, bottom + 5, 0, k_black);
        draw_text(&c, px - text_width(ax.label[i], s) / 2, bottom + 8, ax.label[i], s, 0, k_text);
    }
    for (int i = 0; i < ay.n; i++) {
        int py = MAP_Y(ay.v[i]);
        draw_line(&c, left - 5, py, left, py, 0, k_black);
        draw_text(&c, left - 8 - text_width(ay.label[i], s), py - ch / 2, ay.label[i], s, 0,
                  k_text);
    }
    if (opts->title)
        draw_text(&c, (left + right) / 2 - text_width(opts->title, s) / 2, 10, opts->title, s, 0,
                  k_black);
    if (opts->x_label)
        draw_text(&c, (left + right) / 2 - text_width(opts->x_label, s) / 2, bottom + 8 + ch + 8,
                  opts->x_label, s, 0, k_text);
    if (opts->y_label)
        draw_text(&c, 8, (top + bottom) / 2 + text_width(opts->y_label, s) / 2, opts->y_label, s, 1,
                  k_text);

    /* the curve, then its points when there are few enough to see */
    int have_prev = 0, px0 = 0, py0 = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i]) || !isfinite(y[i]))
            continue;
        int px = MAP_X(x[i]), py = MAP_Y(y[i]);
        if (have_prev)
            draw_line(&c, px0, py0, px, py, s > 1 ? 1 : 0, k_curve);
        else
            put_px(&c, px, py, k_curve);
        have_prev = 1;
        px0 = px;
        py0 = py;
    }
    if (n_ok <= 60)
        for (size_t i = 0; i < n; i++)
            if (isfinite(x[i]) && isfinite(y[i]))
                fill_rect(&c, MAP_X(x[i]) - s - 1, MAP_Y(y[i]) - s - 1, MAP_X(x[i]) + s + 1,
                          MAP_Y(y[i]) + s + 1, k_curve);
#undef MAP_X
#undef MAP_Y
    *rgb = c.px;
    return 0;
}
