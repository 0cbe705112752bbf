// SPDX-License-Identifier: Apache-2.0
// convtvm compatibility header (see third_party/tvm/README.md).
//
// Byte stream interface used by the TVM 0.27 runtime sources that ship in the
// apache-tvm wheel.  Written for convtvm to satisfy the interface those
// sources use (tvm::support::Stream + tvm::support::Serializer<T>); it is not
// a copy of the upstream header.
#ifndef TVM_SUPPORT_IO_H_
#define TVM_SUPPORT_IO_H_

#include <cstddef>
#include <cstdint>

namespace tvm {
namespace support {

class Stream;

/*!
 * \brief Customization point: how a value of type T is written to / read from a Stream.
 *  A specialization sets `enabled = true` and provides static Write/Read.
 *  Specializations live in <tvm/support/serializer.h> (and in runtime headers).
 */
template <typename T, typename = void>
struct Serializer {
  static constexpr bool enabled = false;
};

namespace io_detail {
/*! \brief Whether T can be moved as raw bytes (Serializer<T> says so). */
template <typename T, typename = void>
struct IsRawCopyable {
  static constexpr bool value = false;
};
template <typename T>
struct IsRawCopyable<T, decltype(void(Serializer<T>::kRawBytes))> {
  static constexpr bool value = Serializer<T>::kRawBytes;
};
}  // namespace io_detail

/*! \brief Abstract binary stream. */
class Stream {
 public:
  virtual ~Stream() = default;
  /*! \brief Read up to size bytes into ptr; returns the number of bytes read. */
  virtual size_t Read(void* ptr, size_t size) = 0;
  /*! \brief Write size bytes from ptr; returns the number of bytes written. */
  virtual size_t Write(const void* ptr, size_t size) = 0;

  /*! \brief Write one typed value. */
  template <typename T>
  void Write(const T& value) {
    static_assert(Serializer<T>::enabled, "tvm::support::Serializer<T> is not specialized");
    Serializer<T>::Write(this, value);
  }
  /*! \brief Read one typed value; false on a short read or format error. */
  template <typename T>
  bool Read(T* out) {
    static_assert(Serializer<T>::enabled, "tvm::support::Serializer<T> is not specialized");
    return Serializer<T>::Read(this, out);
  }
  /*! \brief Write n typed values back to back (no length prefix). */
  template <typename T>
  void WriteArray(const T* data, size_t n) {
    if constexpr (io_detail::IsRawCopyable<T>::value) {
      const char* ptr = reinterpret_cast<const char*>(data);
      size_t left = n * sizeof(T);
      while (left != 0) {
        size_t k = this->Write(static_cast<const void*>(ptr), left);
        if (k == 0) break;
        ptr += k;
        left -= k;
      }
    } else {
      for (size_t i = 0; i < n; ++i) this->Write<T>(data[i]);
    }
  }
  /*! \brief Read n typed values written by WriteArray. */
  template <typename T>
  bool ReadArray(T* data, size_t n) {
    if constexpr (io_detail::IsRawCopyable<T>::value) {
      char* ptr = reinterpret_cast<char*>(data);
      size_t left = n * sizeof(T);
      while (left != 0) {
        size_t k = this->Read(static_cast<void*>(ptr), left);
        if (k == 0) return false;
        ptr += k;
        left -= k;
      }
      return true;
    } else {
      for (size_t i = 0; i < n; ++i) {
        if (!this->Read<T>(data + i)) return false;
      }
      return true;
    }
  }
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_IO_H_
