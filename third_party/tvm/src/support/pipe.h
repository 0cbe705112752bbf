// SPDX-License-Identifier: Apache-2.0
// convtvm compatibility header (see third_party/tvm/README.md).
//
// rpc_pipe_impl.cc (POSIX pipes + fork/exec) includes this header but uses the
// POSIX calls directly; this provides those declarations.
#ifndef TVM_SUPPORT_PIPE_H_
#define TVM_SUPPORT_PIPE_H_

#include <tvm/ffi/error.h>
#include <tvm/support/io.h>

#include <errno.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#endif  // TVM_SUPPORT_PIPE_H_
