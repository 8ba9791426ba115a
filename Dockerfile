# The allocator's image, which the Helm chart (charts/gpu-allocator) runs as `gpu-allocator`.
#   docker build -t gpu-allocator:0.1.0 .
#   buildah bud --isolation chroot -t gpu-allocator:0.1.0 .
# BASE is any image with Python 3.11, pip and apt (default: the public Python image). The tests
# build this file with buildah on a base made from Debian's own packages (debootstrap: bookworm's
# python3 is 3.11), because no registry can be reached there (tests/k8s/test_image.py).
# Everything pip installs is pinned by deploy/image/constraints.txt.
ARG BASE=python:3.11-slim

# Build stage: compile the C++ core and its pybind11 extension (scikit-build-core takes CMake and
# Ninja from PyPI) into a wheel.
FROM ${BASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY deploy/image/constraints.txt /constraints.txt
ENV PIP_CONSTRAINT=/constraints.txt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml CMakeLists.txt README.md ./
COPY cpp ./cpp
COPY allocator ./allocator
RUN pip install --upgrade pip \
 && pip wheel --no-deps --wheel-dir /wheels .

# Runtime stage: the wheel with the 'k8s' extra (the kubernetes client, prometheus_client) and
# the 'nvml' extra (nvidia-ml-py, for `gpu-allocator inventory`; the NVML library itself comes
# from the driver through the NVIDIA container runtime), no compiler.
FROM ${BASE}
COPY deploy/image/constraints.txt /constraints.txt
COPY --from=build /wheels /wheels
RUN PIP_CONSTRAINT=/constraints.txt PIP_DISABLE_PIP_VERSION_CHECK=1 \
    pip install --no-cache-dir "$(ls /wheels/gpu_allocator-*.whl)[k8s,nvml]" \
 && rm -rf /wheels /constraints.txt
# A numeric non-root user, so that the chart's runAsNonRoot can be verified by the kubelet.
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin gpu-allocator
USER 10001:10001
ENTRYPOINT ["gpu-allocator"]
CMD ["run", "--once"]
