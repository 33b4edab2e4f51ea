// The CUDA library (lidvae_ext/_cuda) carries its own copy of the argument checks: it is
// loaded beside lidvae_ext/_kernels, and both keep their symbols hidden.
#include "icnn_checks.cpp"
