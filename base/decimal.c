/* base/decimal.c - shortest round-trip decimal of a float (base/decimal.h). */
#include "base/decimal.h"

#include <stdio.h>
#include <stdlib.h>

double tsr_decimal_shortest(float f, int *digits) {
    char b[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(b, sizeof b, "%.*g", p, (double)f);
        if (strtof(b, NULL) == f) {
            if (digits)
                *digits = p;
            return strtod(b, NULL);
        }
    }
    if (digits)
        *digits = 17;
    return (double)f;
}
