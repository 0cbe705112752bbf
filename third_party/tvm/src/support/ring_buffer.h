// SPDX-License-Identifier: Apache-2.0
// convtvm compatibility header (see third_party/tvm/README.md).
//
// Growable FIFO byte buffer used by the TVM RPC endpoint.  Interface expected
// by the runtime sources: bytes_available(), capacity(), Reserve(n),
// Read(dst, n), Write(src, n), ReadWithCallback(fsend, max),
// WriteWithCallback(frecv, max).
#ifndef TVM_SUPPORT_RING_BUFFER_H_
#define TVM_SUPPORT_RING_BUFFER_H_

#include <tvm/ffi/error.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace tvm {
namespace support {

class RingBuffer {
 public:
  static const int kInitCapacity = 4 << 10;

  RingBuffer() : buf_(kInitCapacity) {}

  /*! \return Bytes stored and not yet read. */
  size_t bytes_available() const { return size_; }
  /*! \return Current allocation. */
  size_t capacity() const { return buf_.size(); }

  /*!
   * \brief Make room for at least n stored bytes; shrinks a buffer that is far
   *  larger than needed (the RPC endpoint reserves per message).
   */
  void Reserve(size_t n) {
    if (n > buf_.size()) {
      Relayout(n + n / 4);
    } else if (buf_.size() > kInitCapacity && buf_.size() > 8 * n) {
      Relayout(std::max<size_t>({static_cast<size_t>(kInitCapacity), n, size_}));
    }
  }

  /*! \brief Remove size bytes into data (size <= bytes_available()). */
  void Read(void* data, size_t size) {
    TVM_FFI_ICHECK_LE(size, size_) << "RingBuffer: read past the stored bytes";
    char* out = static_cast<char*>(data);
    size_t first = std::min(size, buf_.size() - head_);
    std::memcpy(out, buf_.data() + head_, first);
    if (first < size) std::memcpy(out + first, buf_.data(), size - first);
    Consume(size);
  }

  /*!
   * \brief Hand up to max_nbytes stored bytes to fsend(const char*, size_t) -> size_t sent
   *  (at most two calls, one per contiguous part) and drop what was sent.
   */
  template <typename FSend>
  size_t ReadWithCallback(FSend fsend, size_t max_nbytes) {
    size_t want = std::min(max_nbytes, size_);
    TVM_FFI_ICHECK_NE(want, 0U) << "RingBuffer: nothing to read";
    size_t first = std::min(want, buf_.size() - head_);
    size_t sent = fsend(buf_.data() + head_, first);
    if (sent == first && first < want) sent += fsend(buf_.data(), want - first);
    Consume(sent);
    return sent;
  }

  /*! \brief Append size bytes. */
  void Write(const void* data, size_t size) {
    Reserve(size_ + size);
    const char* in = static_cast<const char*>(data);
    size_t tail = (head_ + size_) % buf_.size();
    size_t first = std::min(size, buf_.size() - tail);
    std::memcpy(buf_.data() + tail, in, first);
    if (first < size) std::memcpy(buf_.data(), in + first, size - first);
    size_ += size;
  }

  /*!
   * \brief Let frecv(char*, size_t) -> size_t received fill up to max_nbytes
   *  (at most two calls) and append what it wrote.
   */
  template <typename FRecv>
  size_t WriteWithCallback(FRecv frecv, size_t max_nbytes) {
    Reserve(size_ + max_nbytes);
    size_t tail = (head_ + size_) % buf_.size();
    size_t first = std::min(max_nbytes, buf_.size() - tail);
    size_t got = frecv(buf_.data() + tail, first);
    size_ += got;
    if (got == first && first < max_nbytes) {
      size_t more = frecv(buf_.data(), max_nbytes - first);
      size_ += more;
      got += more;
    }
    return got;
  }

 private:
  void Consume(size_t n) {
    size_ -= n;
    head_ = size_ == 0 ? 0 : (head_ + n) % buf_.size();
  }

  // Copy the stored bytes to the front of a new buffer of new_cap bytes.
  void Relayout(size_t new_cap) {
    std::vector<char> next(std::max(new_cap, size_));
    size_t first = std::min(size_, buf_.size() - head_);
    if (size_ != 0) {
      std::memcpy(next.data(), buf_.data() + head_, first);
      if (first < size_) std::memcpy(next.data() + first, buf_.data(), size_ - first);
    }
    buf_.swap(next);
    head_ = 0;
  }

  std::vector<char> buf_;
  size_t head_{0};
  size_t size_{0};
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_RING_BUFFER_H_
