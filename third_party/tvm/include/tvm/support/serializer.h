// SPDX-License-Identifier: Apache-2.0
// convtvm compatibility header (see third_party/tvm/README.md).
//
// Serializer<T> specializations for the types the TVM 0.27 runtime sources
// (de)serialize: arithmetic and enum values, strings, byte strings, vectors,
// pairs, unordered maps, ffi::Array / ffi::Map, DLDataType and DLDevice.
//
// Wire format (must match what the host's libtvm writes):
//   - scalars: raw bytes, little endian;
//   - strings / bytes: uint64 length, then the bytes;
//   - sequences (std::vector, ffi::Array): uint64 count, then the elements;
//   - maps (std::unordered_map, ffi::Map): uint64 count, then key, value pairs;
//   - DLDataType: uint8 code, uint8 bits, uint16 lanes;
//   - DLDevice: int32 device_type, int32 device_id.
#ifndef TVM_SUPPORT_SERIALIZER_H_
#define TVM_SUPPORT_SERIALIZER_H_

#include <dlpack/dlpack.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/endian.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tvm {
namespace support {

namespace serializer_detail {

inline void WriteLength(Stream* strm, uint64_t n);
inline bool ReadLength(Stream* strm, uint64_t* n);

/*! \brief Write a byte string with its uint64 length prefix. */
inline void WriteBytes(Stream* strm, const char* data, size_t size) {
  WriteLength(strm, static_cast<uint64_t>(size));
  if (size != 0) strm->WriteArray<char>(data, size);
}

/*! \brief Read a byte string written by WriteBytes. */
inline bool ReadBytes(Stream* strm, std::string* out) {
  uint64_t size = 0;
  if (!ReadLength(strm, &size)) return false;
  out->resize(static_cast<size_t>(size));
  if (size == 0) return true;
  return strm->ReadArray<char>(&(*out)[0], static_cast<size_t>(size));
}

}  // namespace serializer_detail

/*! \brief Arithmetic scalars: raw little-endian bytes. */
template <typename T>
struct Serializer<T, std::enable_if_t<std::is_arithmetic_v<T>>> {
  static constexpr bool enabled = true;
  /*! \brief An array of T is stored as its raw memory image (no byte swap needed). */
  static constexpr bool kRawBytes = TVM_FFI_IO_NO_ENDIAN_SWAP;

  static void Write(Stream* strm, const T& value) {
    T tmp = value;
    if constexpr (!TVM_FFI_IO_NO_ENDIAN_SWAP) ffi::ByteSwap(&tmp, sizeof(T), 1);
    strm->Write(static_cast<const void*>(&tmp), sizeof(T));
  }
  static bool Read(Stream* strm, T* out) {
    if (strm->Read(static_cast<void*>(out), sizeof(T)) != sizeof(T)) return false;
    if constexpr (!TVM_FFI_IO_NO_ENDIAN_SWAP) ffi::ByteSwap(out, sizeof(T), 1);
    return true;
  }
};

/*! \brief Enums: stored as their underlying integer type. */
template <typename T>
struct Serializer<T, std::enable_if_t<std::is_enum_v<T>>> {
  static constexpr bool enabled = true;
  using Int = std::underlying_type_t<T>;
  static void Write(Stream* strm, const T& value) {
    Serializer<Int>::Write(strm, static_cast<Int>(value));
  }
  static bool Read(Stream* strm, T* out) {
    Int v{};
    if (!Serializer<Int>::Read(strm, &v)) return false;
    *out = static_cast<T>(v);
    return true;
  }
};

namespace serializer_detail {
inline void WriteLength(Stream* strm, uint64_t n) { Serializer<uint64_t>::Write(strm, n); }
inline bool ReadLength(Stream* strm, uint64_t* n) { return Serializer<uint64_t>::Read(strm, n); }
}  // namespace serializer_detail

template <>
struct Serializer<std::string> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::string& s) {
    serializer_detail::WriteBytes(strm, s.data(), s.size());
  }
  static bool Read(Stream* strm, std::string* out) { return serializer_detail::ReadBytes(strm, out); }
};

template <>
struct Serializer<ffi::String> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::String& s) {
    serializer_detail::WriteBytes(strm, s.data(), s.size());
  }
  static bool Read(Stream* strm, ffi::String* out) {
    std::string tmp;
    if (!serializer_detail::ReadBytes(strm, &tmp)) return false;
    *out = ffi::String(std::move(tmp));
    return true;
  }
};

template <>
struct Serializer<ffi::Bytes> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Bytes& b) {
    serializer_detail::WriteBytes(strm, b.data(), b.size());
  }
  static bool Read(Stream* strm, ffi::Bytes* out) {
    std::string tmp;
    if (!serializer_detail::ReadBytes(strm, &tmp)) return false;
    *out = ffi::Bytes(std::move(tmp));
    return true;
  }
};

template <typename T>
struct Serializer<std::vector<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::vector<T>& v) {
    serializer_detail::WriteLength(strm, static_cast<uint64_t>(v.size()));
    if (!v.empty()) strm->WriteArray<T>(v.data(), v.size());
  }
  static bool Read(Stream* strm, std::vector<T>* out) {
    uint64_t n = 0;
    if (!serializer_detail::ReadLength(strm, &n)) return false;
    out->resize(static_cast<size_t>(n));
    if (n == 0) return true;
    return strm->ReadArray<T>(out->data(), static_cast<size_t>(n));
  }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::pair<A, B>& p) {
    Serializer<A>::Write(strm, p.first);
    Serializer<B>::Write(strm, p.second);
  }
  static bool Read(Stream* strm, std::pair<A, B>* out) {
    return Serializer<A>::Read(strm, &out->first) && Serializer<B>::Read(strm, &out->second);
  }
};

template <typename K, typename V>
struct Serializer<std::unordered_map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::unordered_map<K, V>& m) {
    serializer_detail::WriteLength(strm, static_cast<uint64_t>(m.size()));
    for (const auto& kv : m) {
      Serializer<K>::Write(strm, kv.first);
      Serializer<V>::Write(strm, kv.second);
    }
  }
  static bool Read(Stream* strm, std::unordered_map<K, V>* out) {
    uint64_t n = 0;
    if (!serializer_detail::ReadLength(strm, &n)) return false;
    out->clear();
    for (uint64_t i = 0; i < n; ++i) {
      K key{};
      V value{};
      if (!Serializer<K>::Read(strm, &key) || !Serializer<V>::Read(strm, &value)) return false;
      out->emplace(std::move(key), std::move(value));
    }
    return true;
  }
};

template <typename T>
struct Serializer<ffi::Array<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Array<T>& arr) {
    serializer_detail::WriteLength(strm, static_cast<uint64_t>(arr.size()));
    for (const auto& item : arr) Serializer<T>::Write(strm, item);
  }
  static bool Read(Stream* strm, ffi::Array<T>* out) {
    uint64_t n = 0;
    if (!serializer_detail::ReadLength(strm, &n)) return false;
    for (uint64_t i = 0; i < n; ++i) {
      T item{};
      if (!Serializer<T>::Read(strm, &item)) return false;
      out->push_back(std::move(item));
    }
    return true;
  }
};

template <typename K, typename V>
struct Serializer<ffi::Map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Map<K, V>& m) {
    serializer_detail::WriteLength(strm, static_cast<uint64_t>(m.size()));
    for (const auto& kv : m) {
      Serializer<K>::Write(strm, kv.first);
      Serializer<V>::Write(strm, kv.second);
    }
  }
  static bool Read(Stream* strm, ffi::Map<K, V>* out) {
    uint64_t n = 0;
    if (!serializer_detail::ReadLength(strm, &n)) return false;
    for (uint64_t i = 0; i < n; ++i) {
      K key{};
      V value{};
      if (!Serializer<K>::Read(strm, &key) || !Serializer<V>::Read(strm, &value)) return false;
      out->Set(std::move(key), std::move(value));
    }
    return true;
  }
};

template <>
struct Serializer<DLDataType> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const DLDataType& t) {
    Serializer<uint8_t>::Write(strm, t.code);
    Serializer<uint8_t>::Write(strm, t.bits);
    Serializer<uint16_t>::Write(strm, t.lanes);
  }
  static bool Read(Stream* strm, DLDataType* out) {
    return Serializer<uint8_t>::Read(strm, &out->code) &&
           Serializer<uint8_t>::Read(strm, &out->bits) &&
           Serializer<uint16_t>::Read(strm, &out->lanes);
  }
};

template <>
struct Serializer<DLDevice> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const DLDevice& d) {
    Serializer<int32_t>::Write(strm, static_cast<int32_t>(d.device_type));
    Serializer<int32_t>::Write(strm, static_cast<int32_t>(d.device_id));
  }
  static bool Read(Stream* strm, DLDevice* out) {
    int32_t type = 0, id = 0;
    if (!Serializer<int32_t>::Read(strm, &type) || !Serializer<int32_t>::Read(strm, &id)) {
      return false;
    }
    out->device_type = static_cast<DLDeviceType>(type);
    out->device_id = id;
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_SERIALIZER_H_
