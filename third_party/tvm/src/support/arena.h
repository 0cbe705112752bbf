// SPDX-License-Identifier: Apache-2.0
// convtvm compatibility header (see third_party/tvm/README.md).
//
// Page-based bump allocator used by the TVM RPC endpoint and the minrpc
// server.  Interface expected by the runtime sources:
//   struct ArenaPageHeader { next, size, offset }  (a page allocator fills size/offset)
//   template <class PageAllocator> class GenericArena
//       allocate_<T>(n), make<T>(args...), RecycleAll(), FreeAll()
//   PageAllocator: allocate(min_bytes) -> ArenaPageHeader*, deallocate(page),
//                  static kPageSize, kPageAlign
//   using Arena = GenericArena<SimplePageAllocator>
#ifndef TVM_SUPPORT_ARENA_H_
#define TVM_SUPPORT_ARENA_H_

#ifndef TVM_ARENA_HAS_DESTRUCTOR
#define TVM_ARENA_HAS_DESTRUCTOR 1
#endif

#include <cstddef>
#include <cstdlib>
#include <new>
#include <type_traits>
#include <utility>

namespace tvm {
namespace support {

/*! \brief Header at the start of every arena page. */
struct ArenaPageHeader {
  /*! \brief Next page in the list. */
  ArenaPageHeader* next;
  /*! \brief Total size of the page in bytes (header included). */
  size_t size;
  /*! \brief First free byte, counted from the start of the page. */
  size_t offset;
};

/*!
 * \brief Arena that hands out memory from pages obtained from PageAllocator.
 *  Memory is released all at once with RecycleAll (pages kept for reuse) or
 *  FreeAll (pages returned).  Destructors of objects are never run.
 */
template <typename PageAllocator>
class GenericArena {
 public:
  explicit GenericArena(PageAllocator alloc = PageAllocator()) : alloc_(std::move(alloc)) {
    head_ = NewPage(0);
  }
  GenericArena(const GenericArena&) = delete;
  GenericArena& operator=(const GenericArena&) = delete;
#if TVM_ARENA_HAS_DESTRUCTOR
  ~GenericArena() { FreeAll(); }
#endif

  /*! \brief Memory for count objects of type T (uninitialized). */
  template <typename T>
  T* allocate_(int count = 1) {
    static_assert(PageAllocator::kPageAlign % alignof(T) == 0, "alignment too large for arena");
    return static_cast<T*>(Alloc(sizeof(T) * static_cast<size_t>(count), alignof(T)));
  }

  /*! \brief Construct a T inside the arena. */
  template <typename T, typename... Args>
  T* make(Args&&... args) {
    return new (allocate_<T>()) T(std::forward<Args>(args)...);
  }

  /*! \brief Forget all allocations; keep the pages for reuse. */
  void RecycleAll() {
    if (head_ == nullptr) {
      head_ = NewPage(0);
      return;
    }
    // keep the current head page, move every other page to the free list
    ArenaPageHeader* rest = head_->next;
    while (rest != nullptr) {
      ArenaPageHeader* next = rest->next;
      rest->next = free_;
      free_ = rest;
      rest = next;
    }
    head_->next = nullptr;
    head_->offset = sizeof(ArenaPageHeader);
  }

  /*! \brief Return every page to the page allocator. */
  void FreeAll() {
    Release(&head_);
    Release(&free_);
  }

 private:
  static size_t AlignUp(size_t value, size_t align) { return (value + align - 1) / align * align; }

  ArenaPageHeader* NewPage(size_t min_size) {
    ArenaPageHeader* page = alloc_.allocate(min_size < sizeof(ArenaPageHeader) ? sizeof(ArenaPageHeader) : min_size);
    page->next = nullptr;
    page->offset = sizeof(ArenaPageHeader);
    return page;
  }

  void* Alloc(size_t size, size_t align) {
    if (head_ == nullptr) head_ = NewPage(0);
    size_t start = AlignUp(head_->offset, align);
    if (start + size <= head_->size) {
      head_->offset = start + size;
      return reinterpret_cast<char*>(head_) + start;
    }
    // need a new page: take a large-enough one from the free list, else allocate
    start = AlignUp(sizeof(ArenaPageHeader), align);
    ArenaPageHeader* page = nullptr;
    ArenaPageHeader** link = &free_;
    while (*link != nullptr) {
      if (start + size <= (*link)->size) {
        page = *link;
        *link = page->next;
        break;
      }
      link = &(*link)->next;
    }
    if (page == nullptr) page = alloc_.allocate(start + size);
    page->next = head_;
    page->offset = start + size;
    head_ = page;
    return reinterpret_cast<char*>(page) + start;
  }

  void Release(ArenaPageHeader** list) {
    while (*list != nullptr) {
      ArenaPageHeader* page = *list;
      *list = page->next;
      alloc_.deallocate(page);
    }
  }

  PageAllocator alloc_;
  ArenaPageHeader* head_{nullptr};
  ArenaPageHeader* free_{nullptr};
};

/*! \brief Page allocator backed by aligned operator new. */
class SimplePageAllocator {
 public:
  static constexpr int kPageSize = 16 << 10;
  static constexpr int kPageAlign = 1024;

  ArenaPageHeader* allocate(size_t min_size) {
    size_t bytes = (min_size + kPageSize - 1) / kPageSize * kPageSize;
    if (bytes == 0) bytes = kPageSize;
    void* mem = ::operator new(bytes, std::align_val_t(kPageAlign));
    ArenaPageHeader* page = static_cast<ArenaPageHeader*>(mem);
    page->next = nullptr;
    page->size = bytes;
    page->offset = sizeof(ArenaPageHeader);
    return page;
  }
  void deallocate(ArenaPageHeader* page) {
    ::operator delete(static_cast<void*>(page), std::align_val_t(kPageAlign));
  }
};

using Arena = GenericArena<SimplePageAllocator>;

/*! \brief Singly linked list node whose storage usually lives in an Arena. */
template <typename T>
struct LinkNode {
  T value;
  LinkNode<T>* next{nullptr};
};

/*! \brief Intrusive singly linked list of LinkNode<T>. */
template <typename T>
struct LinkedList {
  LinkNode<T>* head{nullptr};
  LinkNode<T>* tail{nullptr};
  void Push(LinkNode<T>* node) {
    node->next = nullptr;
    if (tail == nullptr) {
      head = tail = node;
    } else {
      tail->next = node;
      tail = node;
    }
  }
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_ARENA_H_
