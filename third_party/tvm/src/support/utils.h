// SPDX-License-Identifier: Apache-2.0
// convtvm compatibility header (see third_party/tvm/README.md).
//
// String helpers used by the TVM runtime sources (thread pool, RPC endpoint).
#ifndef TVM_SUPPORT_UTILS_H_
#define TVM_SUPPORT_UTILS_H_

#include <tvm/ffi/string.h>

#include <cctype>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace tvm {
namespace support {

/*! \return Whether s is a non-empty run of decimal digits. */
inline bool IsNumber(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}
inline bool IsNumber(const ffi::String& s) { return IsNumber(std::string_view(s.data(), s.size())); }
inline bool IsNumber(const std::string& s) { return IsNumber(std::string_view(s)); }
inline bool IsNumber(const char* s) { return IsNumber(std::string_view(s)); }

/*! \return Whether s begins with prefix. */
inline bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}
inline bool StartsWith(const ffi::String& s, std::string_view prefix) {
  return StartsWith(std::string_view(s.data(), s.size()), prefix);
}
inline bool StartsWith(const std::string& s, std::string_view prefix) {
  return StartsWith(std::string_view(s), prefix);
}

/*! \return Whether s ends with suffix. */
inline bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
inline bool EndsWith(const ffi::String& s, std::string_view suffix) {
  return EndsWith(std::string_view(s.data(), s.size()), suffix);
}
inline bool EndsWith(const std::string& s, std::string_view suffix) {
  return EndsWith(std::string_view(s), suffix);
}

/*! \brief Split s at every occurrence of delim. */
inline std::vector<std::string> Split(const std::string& s, char delim) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(s);
  while (std::getline(in, item, delim)) out.push_back(item);
  return out;
}

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_UTILS_H_
