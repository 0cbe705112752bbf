// SPDX-License-Identifier: Apache-2.0
// convtvm compatibility header (see third_party/tvm/README.md).
//
// Base64 streams (standard alphabet, '=' padding) used to put tensors into
// JSON.  Built on tvm-ffi's Base64Encode / Base64Decode:
//   Base64OutStream(Stream* sink): Write(...) then Finish(endch = EOF)
//   Base64InStream(Stream* source): InitPosition() then Read(...)
#ifndef TVM_SUPPORT_BASE64_H_
#define TVM_SUPPORT_BASE64_H_

#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/base64.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <string>

namespace tvm {
namespace support {

/*! \brief Decodes the whole base64 text of `source` (leading/trailing blanks ignored). */
class Base64InStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64InStream(Stream* source) : source_(source) {}

  /*! \brief Read and decode the source; call before the first Read. */
  void InitPosition() {
    std::string text;
    char chunk[4096];
    size_t n;
    while ((n = source_->Read(chunk, sizeof(chunk))) != 0) text.append(chunk, n);
    size_t b = 0, e = text.size();
    while (b < e && std::isspace(static_cast<unsigned char>(text[b]))) ++b;
    while (e > b && std::isspace(static_cast<unsigned char>(text[e - 1]))) --e;
    ffi::Bytes raw = ffi::Base64Decode(ffi::String(text.substr(b, e - b)));
    data_.assign(raw.data(), raw.size());
    pos_ = 0;
    ready_ = true;
  }
  /*! \return Whether every decoded byte was read. */
  bool IsEOF() const { return ready_ && pos_ == data_.size(); }

  size_t Read(void* ptr, size_t size) override {
    if (!ready_) InitPosition();
    size_t n = std::min(size, data_.size() - pos_);
    if (n != 0) std::memcpy(ptr, data_.data() + pos_, n);
    pos_ += n;
    return n;
  }
  size_t Write(const void*, size_t) override {
    TVM_FFI_THROW(InternalError) << "Base64InStream is read-only";
    return 0;
  }

 private:
  Stream* source_;
  std::string data_;
  size_t pos_{0};
  bool ready_{false};
};

/*! \brief Collects bytes; Finish() writes their base64 text to `sink`. */
class Base64OutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64OutStream(Stream* sink) : sink_(sink) {}

  size_t Write(const void* ptr, size_t size) override {
    pending_.append(static_cast<const char*>(ptr), size);
    return size;
  }
  size_t Read(void*, size_t) override {
    TVM_FFI_THROW(InternalError) << "Base64OutStream is write-only";
    return 0;
  }
  /*! \brief Flush the encoded text; append endch unless it is EOF. */
  void Finish(int endch = EOF) {
    ffi::String text = ffi::Base64Encode(ffi::Bytes(pending_));
    if (text.size() != 0) sink_->Write(static_cast<const void*>(text.data()), text.size());
    if (endch != EOF) {
      char c = static_cast<char>(endch);
      sink_->Write(static_cast<const void*>(&c), 1);
    }
    pending_.clear();
  }

 private:
  Stream* sink_;
  std::string pending_;
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_BASE64_H_
