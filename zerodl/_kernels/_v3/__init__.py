"""The kernels compiled for x86-64-v3 (AVX2, FMA); imported instead of the baseline
build when the CPU has those instructions."""
