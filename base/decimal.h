/* base/decimal.h - the shortest decimal of a float, for JSON files that
 * people read (adapter_config.json's lora_dropout 0.05f is written "0.05",
 * not "0.050000000745058060").
 *
 * What it is not: a general float formatter; it does not print. */
#ifndef TSR_BASE_DECIMAL_H
#define TSR_BASE_DECIMAL_H

/* The shortest decimal (at most 9 significant digits) that reads back as
 * `f` (strtof), as a double; *digits (may be NULL) is its number of
 * significant digits, for a JSON writer's precision. A value no such
 * decimal reads back as (NaN) is returned as (double)f with *digits 17. */
double tsr_decimal_shortest(float f, int *digits);

#endif
