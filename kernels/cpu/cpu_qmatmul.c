/* kernels/cpu/cpu_qmatmul.c - matmul over weights kept in their block formats. */
#include "kernels/cpu/qdot.h"
