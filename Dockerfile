# The allocator's image, which the Helm chart (charts/gpu-allocator) runs as `gpu-allocator`.
#   docker build -t gpu-allocator:0.1.0 .
# NOTE: this file has not been built here: the development and CI machines have no container
# engine. The chart's tests (tests/k8s/test_chart.py) check the objects it renders and its RBAC,
# not the image.

# Build stage: compile the C++ core and its pybind11 extension (scikit-build-core fetches CMake
# and Ninja from PyPI when the image has none) into a wheel.
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml CMakeLists.txt README.md ./
COPY cpp ./cpp
COPY allocator ./allocator
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Runtime stage: the wheel with the 'k8s' extra (the kubernetes client) and the 'nvml' extra
# (nvidia-ml-py, for `gpu-allocator inventory`; the NVML library itself comes from the driver
# through the NVIDIA container runtime), no compiler.
FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/gpu_allocator-*.whl)[k8s,nvml]" \
 && rm -rf /wheels
# A numeric non-root user, so that the chart's runAsNonRoot can be verified by the kubelet.
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin gpu-allocator
USER 10001:10001
ENTRYPOINT ["gpu-allocator"]
CMD ["run", "--once"]
