/* launcher/cli_plot.h - the loss plot of `tessera-cli train`: a line plot
 * drawn into an RGB canvas (axes, grid, ticks and their labels in a built-in
 * 5x7 bitmap font, the curve) and a PNG encoder for it (zlib: compress2 for
 * the image data, crc32 for the chunk checksums).
 *
 * What it is not: a plotting library. One curve, linear axes, lower-case
 * ASCII labels (upper case is drawn as lower case, other characters as a
 * box); no anti-aliasing, no legend. */
#ifndef TSR_LAUNCHER_CLI_PLOT_H
#define TSR_LAUNCHER_CLI_PLOT_H

#include <stddef.h>
#include <stdint.h>

/* Encodes an 8-bit RGB image as a PNG (colour type 2, no interlace, filter 0
 * on every row, one IDAT chunk). rgb holds h rows of w pixels, 3 bytes each,
 * top row first: (h, w, 3). On success returns 0 and *png is a malloc'd
 * buffer of *len bytes that the caller frees. Returns -1 (with *png NULL)
 * when w or h is not in 1..16384 or memory or zlib fails. */
int tsr_cli_png_encode(const uint8_t *rgb, int w, int h, uint8_t **png, size_t *len);

/* What the plot says around its curve; every string may be NULL (none). */
typedef struct {
    int width, height;   /* pixels; each at least 160 x 120 */
    const char *title;   /* above the plot */
    const char *x_label; /* below the x axis */
    const char *y_label; /* beside the y axis, written bottom to top */
} tsr_cli_plot_opts;

/* Draws the points (x[i], y[i]), i < n, joined in order, into a fresh
 * malloc'd canvas *rgb of (height, width, 3) bytes that the caller frees:
 * white background, light grid, black axes with "nice" ticks (1, 2 or 5
 * times a power of ten; whole numbers on the x axis when every x is whole)
 * and their labels, a blue curve with a marker on each point when there are
 * few. Points whose x or y is not finite are left out; with no point left
 * the axes span 0..1. Returns 0, or -1 (with *rgb NULL) for bad sizes or no
 * memory. */
int tsr_cli_plot_line(const double *x, const double *y, size_t n, const tsr_cli_plot_opts *opts,
                      uint8_t **rgb);

/* The curve's colour, for tests that look for it in the image. */
#define TSR_CLI_PLOT_CURVE_R 31
#define TSR_CLI_PLOT_CURVE_G 119
#define TSR_CLI_PLOT_CURVE_B 180

#endif
