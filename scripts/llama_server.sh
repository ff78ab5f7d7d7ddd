#!/usr/bin/env bash
# Builds a real llama-server from the llama.cpp sources the llama-cpp-python sdist ships (pinned;
# PyPI is reachable where crates are) into DIR/bin/llama-server, once: later calls find it there.
# Usage: scripts/llama_server.sh DIR   (prints the binary's path)
set -euo pipefail
dir=${1:?usage: scripts/llama_server.sh DIR}
version=0.3.36
bin="$dir/bin/llama-server"
if [ -x "$bin" ] && [ "$(cat "$dir/version" 2>/dev/null)" = "$version" ]; then
    echo "$bin"
    exit 0
fi
mkdir -p "$dir/src"
if [ ! -f "$dir/src/llama_cpp_python-$version.tar.gz" ]; then
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$dir/src" "llama-cpp-python==$version" >&2
fi
rm -rf "$dir/src/llama_cpp_python-$version"
tar xzf "$dir/src/llama_cpp_python-$version.tar.gz" -C "$dir/src"
src="$dir/src/llama_cpp_python-$version/vendor/llama.cpp"
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$src" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF "${launcher[@]}" >&2
cmake --build "$dir/build" --target llama-server -j "$(nproc)" >&2
mkdir -p "$dir/bin"
cp "$dir/build/bin/llama-server" "$bin"
echo "$version" >"$dir/version"
rm -rf "$dir/src/llama_cpp_python-$version"
echo "$bin"
