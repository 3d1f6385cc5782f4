/* tests/unit/test_util.h - kept only so that tests/lora/test_lora_unit.c
 * still builds until it includes tests/common/check.h itself; the helpers are
 * there. Do not add anything here. */
#ifndef TSR_TESTS_UNIT_TEST_UTIL_H
#define TSR_TESTS_UNIT_TEST_UTIL_H

#include "tests/common/check.h"

#endif
