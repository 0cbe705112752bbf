// SPDX-License-Identifier: Apache-2.0
// convtvm compatibility header (see third_party/tvm/README.md).
//
// Minimal POSIX TCP socket wrapper with the interface rpc_socket_impl.cc uses:
//   SockAddr(host, port), ss_family(), AsString()
//   Socket::Error(msg)
//   TCPSocket(), TCPSocket(SockType fd), Create(family), Connect(addr), Close(),
//   BadSocket(), Send/Recv (one call), SendAll/RecvAll (loop until done).
// POSIX only (Linux / aarch64 device builds); no Windows support.
#ifndef TVM_SUPPORT_SOCKET_H_
#define TVM_SUPPORT_SOCKET_H_

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <tvm/ffi/error.h>
#include <tvm/support/io.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace tvm {
namespace support {

/*! \brief An IPv4/IPv6 socket address resolved from a host name and a port. */
class SockAddr {
 public:
  SockAddr() { std::memset(&addr_, 0, sizeof(addr_)); }
  SockAddr(const char* host, int port) : SockAddr() { Set(host, port); }

  /*! \brief Resolve host (name or numeric address) and set the port. */
  void Set(const char* host, int port) {
    addrinfo hints;
    std::memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    std::string service = std::to_string(port);
    int rc = getaddrinfo(host, service.c_str(), &hints, &res);
    if (rc != 0 || res == nullptr) {
      TVM_FFI_THROW(RuntimeError) << "cannot resolve address " << host << ":" << port << ": "
                                  << gai_strerror(rc);
    }
    std::memcpy(&addr_, res->ai_addr, res->ai_addrlen);
    len_ = static_cast<socklen_t>(res->ai_addrlen);
    freeaddrinfo(res);
  }

  int ss_family() const { return addr_.ss_family; }
  const sockaddr* addr() const { return reinterpret_cast<const sockaddr*>(&addr_); }
  socklen_t addr_len() const { return len_; }

  int port() const {
    if (addr_.ss_family == AF_INET6) {
      return ntohs(reinterpret_cast<const sockaddr_in6*>(&addr_)->sin6_port);
    }
    return ntohs(reinterpret_cast<const sockaddr_in*>(&addr_)->sin_port);
  }

  /*! \brief "host:port" in numeric form. */
  std::string AsString() const {
    char buf[INET6_ADDRSTRLEN] = {0};
    const void* src = addr_.ss_family == AF_INET6
                          ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(&addr_)->sin6_addr)
                          : static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(&addr_)->sin_addr);
    if (inet_ntop(addr_.ss_family, src, buf, sizeof(buf)) == nullptr) return "<unknown>";
    return std::string(buf) + ":" + std::to_string(port());
  }

 private:
  sockaddr_storage addr_;
  socklen_t len_{sizeof(sockaddr_storage)};
};

/*! \brief A socket file descriptor (copyable handle; Close() is explicit). */
class Socket {
 public:
  using SockType = int;
  static constexpr SockType kInvalid = -1;

  SockType sockfd;

  explicit Socket(SockType fd = kInvalid) : sockfd(fd) {}
  operator SockType() const { return sockfd; }  // NOLINT(*)

  /*! \brief Throw with the current errno text. */
  static void Error(const char* what) {
    int err = errno;
    TVM_FFI_THROW(RuntimeError) << "Socket " << what << " error: " << std::strerror(err);
  }
  static int GetLastError() { return errno; }

  /*! \brief Whether the socket is unusable (invalid fd or pending error). */
  bool BadSocket() const {
    if (sockfd == kInvalid) return true;
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(sockfd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return true;
    return err == EBADF || err == EINTR;
  }

  void SetNonBlock(bool non_block) {
    int flags = fcntl(sockfd, F_GETFL, 0);
    if (flags == -1) Error("fcntl");
    flags = non_block ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    if (fcntl(sockfd, F_SETFL, flags) == -1) Error("fcntl");
  }

  void Close() {
    if (sockfd != kInvalid) {
      ::close(sockfd);
      sockfd = kInvalid;
    }
  }
};

/*! \brief A TCP stream socket. */
class TCPSocket : public Socket {
 public:
  TCPSocket() : Socket(kInvalid) {}
  explicit TCPSocket(SockType fd) : Socket(fd) {}

  void Create(int family = AF_INET) {
    sockfd = ::socket(family, SOCK_STREAM, 0);
    if (sockfd == kInvalid) Error("Create");
  }

  bool Connect(const SockAddr& addr) { return ::connect(sockfd, addr.addr(), addr.addr_len()) == 0; }

  void Listen(int backlog = 16) {
    if (::listen(sockfd, backlog) != 0) Error("Listen");
  }

  TCPSocket Accept() {
    SockType fd = ::accept(sockfd, nullptr, nullptr);
    if (fd == kInvalid) Error("Accept");
    return TCPSocket(fd);
  }

  /*! \brief One send(2) call; returns bytes sent or -1. */
  ssize_t Send(const void* buf, size_t len, int flags = 0) {
    ssize_t n;
    do {
      n = ::send(sockfd, buf, len, flags | MSG_NOSIGNAL);
    } while (n == -1 && errno == EINTR);
    return n;
  }

  /*! \brief One recv(2) call; returns bytes received (0 at EOF) or -1. */
  ssize_t Recv(void* buf, size_t len, int flags = 0) {
    ssize_t n;
    do {
      n = ::recv(sockfd, buf, len, flags);
    } while (n == -1 && errno == EINTR);
    return n;
  }

  /*! \brief Send all len bytes; returns len, or throws on error. */
  size_t SendAll(const void* buf, size_t len) {
    const char* p = static_cast<const char*>(buf);
    size_t done = 0;
    while (done < len) {
      ssize_t n = Send(p + done, len - done);
      if (n == -1) Error("SendAll");
      done += static_cast<size_t>(n);
    }
    return done;
  }

  /*! \brief Receive len bytes; returns fewer only when the peer closed. */
  size_t RecvAll(void* buf, size_t len) {
    char* p = static_cast<char*>(buf);
    size_t done = 0;
    while (done < len) {
      ssize_t n = Recv(p + done, len - done, MSG_WAITALL);
      if (n == -1) Error("RecvAll");
      if (n == 0) break;
      done += static_cast<size_t>(n);
    }
    return done;
  }

  /*! \brief Send a string as int32 length + bytes. */
  void SendBytes(const std::string& s) {
    int len = static_cast<int>(s.size());
    SendAll(&len, sizeof(len));
    if (len != 0) SendAll(s.data(), s.size());
  }
  /*! \brief Receive a string written by SendBytes. */
  std::string RecvBytes() {
    int len = 0;
    TVM_FFI_ICHECK_EQ(RecvAll(&len, sizeof(len)), sizeof(len));
    std::string s(static_cast<size_t>(len), '\0');
    if (len != 0) TVM_FFI_ICHECK_EQ(RecvAll(&s[0], s.size()), s.size());
    return s;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_SOCKET_H_
