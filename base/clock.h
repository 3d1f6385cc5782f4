/* base/clock.h - the one monotonic clock of the tree (programs, libraries,
 * tests and benchmarks alike).
 *
 * What it is not: wall-clock time (use time(2) or CLOCK_REALTIME for dates). */
#ifndef TSR_BASE_CLOCK_H
#define TSR_BASE_CLOCK_H

/* Seconds on CLOCK_MONOTONIC, with nanosecond resolution. Can't fail. */
double tsr_now_s(void);

#endif
