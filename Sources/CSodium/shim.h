#ifndef WIREMESH_CSODIUM_SHIM_H
#define WIREMESH_CSODIUM_SHIM_H
#include <sodium.h>
#endif
