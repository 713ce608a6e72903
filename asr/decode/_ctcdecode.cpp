// CTC prefix beam search with word n-gram shallow fusion and a lexicon, in C++.
//
// Built by pip (setuptools ext_modules in setup.py) as asr.decode._ctcdecode; it uses only the
// Python C API and the standard library, so nothing but a C++ compiler is needed at install time.
// The algorithm is the same, operation for operation, as the pure-Python reference in
// asr/decode/reference.py (tests check that both return the same n-best lists and scores).
//
// Python interface (wrapped by asr/decode/beam.py and asr/decode/lm.py):
//   lm_from_arpa(data: bytes) -> capsule                       parse an ARPA text
//   lm_from_file(path: str) -> capsule                        read and parse a plain ARPA file
//   lm_order(lm) -> int
//   lm_info(lm) -> (order, [n-grams per order], bytes held)
//   lm_words(lm) -> list[str]                                  unigrams in file order
//   lm_sentence(lm, words: list[str], bos: bool, eos: bool) -> float   log10 P(sentence)
//   decoder_new(token_bytes: list[bytes], kinds: list[int], blank: int, lm | None,
//               lexicon: list[str] | list[tuple[str, list[int]]] | None, max_dense_cells: int = 2**23)
//       lexicon: spelled words (the trie walks the UTF-8 bytes of the tokens), or (word, token ids)
//       pronunciations (the trie walks token ids: phone models; a word may have several, and a
//       pronunciation several words, which the search tells apart by their LM history)
//   decode(decoder, log_probs: buffer float32 (B, T, V), lengths: buffer int64 (B,),
//          beam_size, token_topk, token_min_logp, alpha, beta, oov_penalty, nbest, beam_threshold,
//          threads, lm_lookahead: 0 off, 1 unigram, 2 context)
//       lm_lookahead (with an LM and a lexicon): a partial word is scored alpha * the best unigram
//       ln P of the lexicon words it can still become (flashlight's smearing), replaced by the real
//       LM score when the word completes, so that a beam keeps the prefixes of likely words; the
//       context look-ahead instead takes the best over the LM state's back-off chain of (back-offs
//       so far + the best ln P of the words below that the chain's state lists), an upper bound of
//       the best ln P(word | history) (Ortmanns et al. 1996's LM look-ahead, with the n-gram's own
//       back-off structure), computed per (state, trie node) on first use
//       -> list (B) of lists of (token ids, score, ctc_score, lm_score, words | None)
//          (words: the lexicon words of a pronunciation lexicon, else None)

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

const double NEG_INF = -std::numeric_limits<double>::infinity();
const double LN10 = 2.302585092994046;  // math.log(10.0)

inline double logaddexp(double a, double b) {
    if (a == NEG_INF) return b;
    if (b == NEG_INF) return a;
    if (a > b) return a + std::log1p(std::exp(b - a));
    return b + std::log1p(std::exp(a - b));
}

// Open-addressing hash map from uint64 keys to int32 values (linear probing).
class U64Map {
  public:
    explicit U64Map(size_t capacity = 16) { reset(capacity); }

    void reset(size_t capacity) {
        size_t n = 16;
        while (n < capacity * 2) n <<= 1;
        keys_.assign(n, EMPTY);
        vals_.assign(n, 0);
        mask_ = n - 1;
        count_ = 0;
    }

    int32_t get(uint64_t key) const {
        size_t i = hash(key) & mask_;
        while (true) {
            const uint64_t k = keys_[i];
            if (k == key) return vals_[i];
            if (k == EMPTY) return -1;
            i = (i + 1) & mask_;
        }
    }

    void put(uint64_t key, int32_t value) {
        if ((count_ + 1) * 2 > keys_.size()) grow();
        insert(key, value);
    }

    size_t bytes() const { return keys_.capacity() * sizeof(uint64_t) + vals_.capacity() * sizeof(int32_t); }

    // f(key, value) for every entry, in table order
    template <typename F>
    void for_each(F f) const {
        for (size_t i = 0; i < keys_.size(); ++i)
            if (keys_[i] != EMPTY) f(keys_[i], vals_[i]);
    }

  private:
    static constexpr uint64_t EMPTY = ~0ULL;

    static inline uint64_t hash(uint64_t k) {
        k ^= k >> 33;
        k *= 0xff51afd7ed558ccdULL;
        k ^= k >> 33;
        k *= 0xc4ceb9fe1a85ec53ULL;
        k ^= k >> 33;
        return k;
    }

    void insert(uint64_t key, int32_t value) {
        size_t i = hash(key) & mask_;
        while (keys_[i] != EMPTY && keys_[i] != key) i = (i + 1) & mask_;
        if (keys_[i] == EMPTY) ++count_;
        keys_[i] = key;
        vals_[i] = value;
    }

    void grow() {
        std::vector<uint64_t> keys;
        std::vector<int32_t> vals;
        keys.swap(keys_);
        vals.swap(vals_);
        reset(keys.size());
        for (size_t i = 0; i < keys.size(); ++i)
            if (keys[i] != EMPTY) insert(keys[i], vals[i]);
    }

    std::vector<uint64_t> keys_;
    std::vector<int32_t> vals_;
    size_t mask_ = 0, count_ = 0;
};

inline uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// ---------------------------------------------------------------------------------------------
// Back-off word n-gram model read from ARPA.
//
// A "state" is an n-gram of order 0..N-1 (id 0 = the empty context) holding its back-off weight
// and the id of its suffix (the state without its first word). An entry (context state, word)
// holds log10 P(word | context) and, for orders below N, the state of context+word. Scoring backs
// off along suffixes; the new state is the longest suffix of context+word that is a state
// (KenLM's state minimisation), so equal histories score equally.
class NGramModel {
  public:
    int order = 0;
    std::unordered_map<std::string, int32_t> word_id;
    std::vector<std::string> words;
    int32_t unk = -1, bos = -1, eos = -1;
    double unk_log10 = -100.0;  // used when the ARPA has no <unk>, as KenLM does
    bool nonpositive = true;    // no probability or back-off above log10 0: scores never rise

    std::vector<double> prob;         // entry -> log10 probability
    std::vector<int32_t> entry_state;  // entry -> state id (order < N) or -1
    std::vector<double> backoff;      // state -> log10 back-off
    std::vector<int32_t> suffix;      // state -> suffix state
    U64Map table{1024};               // (context state, word) -> entry

    NGramModel() {
        backoff.push_back(0.0);
        suffix.push_back(0);
    }

    int32_t lookup_word(const std::string& w) const {
        auto it = word_id.find(w);
        return it == word_id.end() ? unk : it->second;
    }

    int32_t begin_state() const {
        if (bos < 0) return 0;
        int32_t e = table.get(pair_key(0, bos));
        return e >= 0 && entry_state[e] >= 0 ? entry_state[e] : 0;
    }

    // log10 P(word | state); writes the next state.
    double score(int32_t state, int32_t word, int32_t* next) const {
        double total = 0.0;
        int32_t s = state;
        if (word < 0) {  // no <unk> in the model: back off to the root, then the fixed penalty
            while (s != 0) {
                total += backoff[s];
                s = suffix[s];
            }
            *next = 0;
            return total + unk_log10;
        }
        while (true) {
            const int32_t e = table.get(pair_key(s, word));
            if (e >= 0) {
                int32_t ns = entry_state[e];
                if (ns < 0) {  // a highest-order hit: keep the longest shorter suffix that is a state
                    ns = 0;
                    int32_t s2 = suffix[s];
                    while (true) {
                        const int32_t e2 = table.get(pair_key(s2, word));
                        if (e2 >= 0 && entry_state[e2] >= 0) {
                            ns = entry_state[e2];
                            break;
                        }
                        if (s2 == 0) break;
                        s2 = suffix[s2];
                    }
                }
                *next = ns;
                return total + prob[e];
            }
            if (s == 0) {
                *next = 0;
                return total + unk_log10;
            }
            total += backoff[s];
            s = suffix[s];
        }
    }

    // Parse an ARPA text (``data[size]`` must be readable; it need not end with a NUL).
    // Throws std::runtime_error("line N: ...") on malformed input: a count in the \data\ header
    // that a section does not match, a section cut short (no \end\), bad numbers, unknown words.
    void load(const char* data, size_t size) {
        int section = 0;  // current \N-grams: section, 0 before the first
        size_t pos = 0;
        long line_no = 0;
        long in_section = 0;  // n-grams read in the current section
        long section_line = 0;
        std::vector<int32_t> ids;
        std::vector<const char*> tok_begin;
        std::vector<size_t> tok_len;
        std::string key;
        std::vector<int32_t> prev_ids;  // the previous line's words (index 1..n), to reuse their ids
        std::vector<const char*> prev_tok;
        std::vector<size_t> prev_len;
        bool seen_data = false, ended = false, reserved = false;
        max_order = 0;
        auto fail = [&line_no](const std::string& what) {
            throw std::runtime_error("line " + std::to_string(line_no) + ": " + what);
        };
        // the section just read must hold as many n-grams as the header announced
        auto close_section = [&]() {
            if (section == 0) return;
            const long want = section < static_cast<int>(header_counts.size()) ? header_counts[section] : -1;
            if (in_section != want)
                throw std::runtime_error(
                    "line " + std::to_string(section_line) + ": the \\data\\ header announces " +
                    std::to_string(want) + " " + std::to_string(section) + "-grams but the \\" +
                    std::to_string(section) + "-grams: section holds " + std::to_string(in_section) +
                    (ended ? "" : " (truncated file?)"));
        };
        while (pos < size && !ended) {
            const char* nl = static_cast<const char*>(std::memchr(data + pos, '\n', size - pos));
            const size_t end = nl ? static_cast<size_t>(nl - data) : size;
            ++line_no;
            const char* line = data + pos;
            size_t len = end - pos;
            pos = end + 1;
            while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
                --len;
            size_t start = 0;
            while (start < len && (line[start] == ' ' || line[start] == '\t')) ++start;
            line += start;
            len -= start;
            if (len == 0) continue;
            if (line[0] == '\\') {
                std::string head(line, len);
                if (head == "\\data\\") {
                    seen_data = true;
                } else if (head == "\\end\\") {
                    ended = true;
                    close_section();
                } else if (head.size() > 8 && head.substr(head.size() - 7) == "-grams:") {
                    close_section();
                    section = std::atoi(head.c_str() + 1);
                    if (section != order + 1) fail("n-gram sections must come in order 1, 2, ...");
                    if (section > max_order)
                        fail("section " + head + " is not announced in the \\data\\ header");
                    order = section;
                    in_section = 0;
                    section_line = line_no;
                    if (!reserved) reserve();
                    reserved = true;
                } else {
                    fail("unknown section " + head);
                }
                continue;
            }
            if (section == 0) {  // the \data\ header: "ngram N=count"
                std::string l(line, len);
                if (l.compare(0, 6, "ngram ") == 0) {
                    char* eq = nullptr;
                    const long n = std::strtol(l.c_str() + 6, &eq, 10);
                    char* cend = nullptr;
                    const long c = (eq && *eq == '=') ? std::strtol(eq + 1, &cend, 10) : -1;
                    if (n < 1 || n > 64 || c < 0 || !cend || *cend != '\0') fail("bad header line " + l);
                    if (static_cast<long>(header_counts.size()) <= n) header_counts.resize(n + 1, -1);
                    header_counts[n] = c;
                    max_order = std::max(max_order, static_cast<int>(n));
                } else if (seen_data) {
                    fail("expected 'ngram N=count' in the \\data\\ header, got " + l.substr(0, 60));
                }
                continue;
            }
            // split into fields
            tok_begin.clear();
            tok_len.clear();
            size_t i = 0;
            while (i < len) {
                while (i < len && (line[i] == ' ' || line[i] == '\t')) ++i;
                if (i >= len) break;
                size_t j = i;
                while (j < len && line[j] != ' ' && line[j] != '\t') ++j;
                tok_begin.push_back(line + i);
                tok_len.push_back(j - i);
                i = j;
            }
            const int n = section;
            if (static_cast<int>(tok_begin.size()) < n + 1 || static_cast<int>(tok_begin.size()) > n + 2)
                fail("expected a probability, " + std::to_string(n) + " words and maybe a back-off");
            double p, bo = 0.0;
            if (!parse_number(tok_begin[0], tok_len[0], &p))
                fail("bad probability " + std::string(tok_begin[0], tok_len[0]));
            if (static_cast<int>(tok_begin.size()) > n + 1 &&
                !parse_number(tok_begin[n + 1], tok_len[n + 1], &bo))
                fail("bad back-off " + std::string(tok_begin[n + 1], tok_len[n + 1]));
            ids.clear();
            for (int k = 1; k <= n; ++k) {
                // ARPA files list n-grams sorted by context: most words repeat the line above
                if (k < static_cast<int>(prev_ids.size()) && prev_len[k] == tok_len[k] &&
                    std::memcmp(prev_tok[k], tok_begin[k], tok_len[k]) == 0) {
                    ids.push_back(prev_ids[k]);
                    continue;
                }
                key.assign(tok_begin[k], tok_len[k]);
                auto it = word_id.find(key);
                if (it != word_id.end()) {
                    ids.push_back(it->second);
                } else if (n == 1) {
                    const int32_t id = static_cast<int32_t>(words.size());
                    word_id.emplace(key, id);
                    words.push_back(key);
                    ids.push_back(id);
                } else {
                    fail("word '" + key + "' is not among the unigrams");
                }
            }
            add(ids, p, bo, line_no);
            ++in_section;
            prev_ids.assign(1, -1);
            prev_ids.insert(prev_ids.end(), ids.begin(), ids.end());
            prev_tok.assign(tok_begin.begin(), tok_begin.begin() + n + 1);
            prev_len.assign(tok_len.begin(), tok_len.begin() + n + 1);
        }
        if (!seen_data || order == 0) {
            line_no = 1;
            fail("no \\data\\ or \\1-grams: section; not an ARPA file");
        }
        if (!ended) close_section();  // a section cut short names its count first
        if (order != max_order)
            throw std::runtime_error("the \\data\\ header announces " + std::to_string(max_order) +
                                     "-grams but the file has sections up to " + std::to_string(order) +
                                     " (truncated file?)");
        if (!ended) throw std::runtime_error("line " + std::to_string(line_no) + ": the file ends without \\end\\ "
                                             "(truncated file?)");
        auto it = word_id.find("<unk>");
        unk = it == word_id.end() ? -1 : it->second;
        it = word_id.find("<s>");
        bos = it == word_id.end() ? -1 : it->second;
        it = word_id.find("</s>");
        eos = it == word_id.end() ? -1 : it->second;
        for (double p : prob) nonpositive = nonpositive && p <= 0.0;
        for (double b : backoff) nonpositive = nonpositive && b <= 0.0;
    }

    // n-grams per order as the file's header announced them (index 0 unused)
    std::vector<long> header_counts;

    // The words listed after each state, for the context LM look-ahead: state s's are
    // succ_word/succ_entry[succ_off[s] .. succ_off[s + 1]). Built on first use (thread-safe).
    void build_successors() const {
        std::call_once(succ_once_, [this]() {
            const size_t S = backoff.size();
            succ_off.assign(S + 1, 0);
            table.for_each([&](uint64_t key, int32_t) { ++succ_off[(key >> 32) + 1]; });
            for (size_t i = 0; i < S; ++i) succ_off[i + 1] += succ_off[i];
            succ_word.assign(succ_off[S], 0);
            succ_entry.assign(succ_off[S], 0);
            std::vector<int64_t> fill(succ_off.begin(), succ_off.end() - 1);
            table.for_each([&](uint64_t key, int32_t e) {
                const int64_t i = fill[key >> 32]++;
                succ_word[i] = static_cast<int32_t>(key & 0xffffffffu);
                succ_entry[i] = e;
            });
            // the lowest sum of back-offs along a state's suffix chain (ln): how far below the
            // unigram look-ahead a context look-ahead can be
            chain_min = 0.0;
            std::vector<double> chain(S, 0.0);
            for (size_t st = 1; st < S; ++st) {  // suffixes are listed before the states that extend them
                chain[st] = backoff[st] * LN10 + chain[suffix[st]];
                chain_min = std::min(chain_min, chain[st]);
            }
        });
    }
    mutable std::vector<int64_t> succ_off;
    mutable std::vector<int32_t> succ_word, succ_entry;
    mutable double chain_min = 0.0;

    // bytes held by the model's tables
    size_t memory_bytes() const {
        size_t b = prob.capacity() * sizeof(double) + entry_state.capacity() * sizeof(int32_t) +
                   backoff.capacity() * sizeof(double) + suffix.capacity() * sizeof(int32_t) + table.bytes();
        for (const auto& w : words) b += sizeof(std::string) + w.capacity() + 32;  // + the word_id node
        return b;
    }

  private:
    static bool parse_number(const char* s, size_t len, double* out) {
#if defined(__cpp_lib_to_chars) && __cpp_lib_to_chars >= 201611L
        if (len && s[0] == '+') {  // from_chars does not take a leading '+'
            ++s;
            --len;
        }
        const auto r = std::from_chars(s, s + len, *out);
        return r.ec == std::errc() && r.ptr == s + len;
#else
        std::string num(s, len);
        char* end = nullptr;
        *out = std::strtod(num.c_str(), &end);
        return end == num.c_str() + len && len > 0;
#endif
    }

    // size the tables once from the header's counts (the file is read in one pass)
    void reserve() {
        size_t total = 0, states = 1;
        for (int n = 1; n < static_cast<int>(header_counts.size()); ++n) {
            if (header_counts[n] <= 0) continue;
            total += static_cast<size_t>(header_counts[n]);
            if (n < max_order) states += static_cast<size_t>(header_counts[n]);
        }
        if (total > (size_t{1} << 31) - 2) throw std::runtime_error("more than 2^31 n-grams");
        prob.reserve(total);
        entry_state.reserve(total);
        backoff.reserve(states);
        suffix.reserve(states);
        table.reset(total);
        if (header_counts.size() > 1 && header_counts[1] > 0) {
            words.reserve(static_cast<size_t>(header_counts[1]));
            word_id.reserve(static_cast<size_t>(header_counts[1]));
        }
    }

    // state id of the word sequence ids[from..to), or -1 if it is not a state
    int32_t find_state(const std::vector<int32_t>& ids, size_t from, size_t to) const {
        int32_t s = 0;
        for (size_t k = from; k < to; ++k) {
            const int32_t e = table.get(pair_key(s, ids[k]));
            if (e < 0 || entry_state[e] < 0) return -1;
            s = entry_state[e];
        }
        return s;
    }

    void add(const std::vector<int32_t>& ids, double p, double bo, long line_no) {
        const size_t n = ids.size();
        // the context state of the previous n-gram, when it is the same context (sorted files)
        int32_t ctx;
        if (last_ctx_ids.size() == n - 1 && std::equal(ids.begin(), ids.end() - 1, last_ctx_ids.begin())) {
            ctx = last_ctx;
        } else {
            ctx = find_state(ids, 0, n - 1);
            last_ctx_ids.assign(ids.begin(), ids.end() - 1);
            last_ctx = ctx;
        }
        if (ctx < 0)
            throw std::runtime_error("line " + std::to_string(line_no) +
                                     ": the n-gram's context is not listed among the lower orders");
        const int32_t e = static_cast<int32_t>(prob.size());
        prob.push_back(p);
        int32_t st = -1;
        if (static_cast<int>(n) < max_order) {  // highest-order n-grams are never contexts
            st = static_cast<int32_t>(backoff.size());
            backoff.push_back(bo);
            int32_t suf = -1;
            for (size_t from = 1; from <= n && suf < 0; ++from) suf = find_state(ids, from, n);
            suffix.push_back(suf < 0 ? 0 : suf);
        }
        entry_state.push_back(st);
        table.put(pair_key(ctx, ids[n - 1]), e);
    }

    mutable std::once_flag succ_once_;
    int max_order = 0;
    std::vector<int32_t> last_ctx_ids{-1};  // (none yet: no context has a word id -1)
    int32_t last_ctx = -1;
};

// ---------------------------------------------------------------------------------------------
// Token kinds: how a token changes the current word.
enum Kind : int { APPEND = 0, SEPARATOR = 1, WORD_START = 2, BLANK = 3 };

struct Decoder {
    int V = 0;
    int blank = 0;
    std::vector<int> kind;
    std::vector<std::string> chars;  // UTF-8 characters a token adds to the current word
    std::vector<int32_t> start_node;  // WORD_START tokens: trie node of their characters from the root
    const NGramModel* lm = nullptr;
    bool lexicon = false;
    bool use_words = false;
    bool oov_mode = false;  // LM without lexicon: count words outside the LM's vocabulary
    // Pronunciation lexicon (phone models): the trie's symbols are token ids, a node may end
    // several words (homophones), and completing a word branches into each of them (with an LM;
    // without one they tie, and the first in the lexicon's order stands for them all).
    bool pron = false;
    std::vector<std::string> lex_words;            // pronunciation lexicon: word strings
    std::vector<int32_t> lex_lm;                   // ... and their LM ids (or unk)
    std::vector<std::vector<int32_t>> node_words;  // trie node -> lexicon word indices (pron)
    int max_variants = 1;                          // most words of one node (1 when spelled)
    // character trie over the lexicon's words (with a lexicon) or the LM's words (without);
    // token-id trie over the pronunciations with a pronunciation lexicon
    std::vector<int32_t> trie_word;  // node -> LM word id (or unk) if a word ends here, else -2
    std::vector<int32_t> trie_parent{-1};  // node -> its parent (the root's: -1); parents come first
    U64Map trie_child{256};
    // LM look-ahead (an LM and a lexicon): node -> the best unigram ln P of the words below it,
    // and the most that completing a word can restore (-min over nodes)
    std::vector<double> lookahead;
    double lookahead_gap = 0.0;
    // context look-ahead: LM word id -> the trie nodes where it ends (leaf_node[leaf_off[w] ..
    // leaf_off[w + 1]))
    std::vector<int32_t> leaf_off, leaf_node;

    // trie node after token c's symbols from ``node``: its UTF-8 bytes, or the token itself (pron)
    int32_t trie_walk(int32_t node, int c) const {
        if (pron) return node < 0 ? -1 : trie_child.get(pair_key(node, c));
        for (unsigned char b : chars[c]) {
            if (node < 0) return -1;
            node = trie_child.get(pair_key(node, b));
        }
        return node;
    }

    // the trie node of a symbol sequence, created as needed
    template <typename Seq>
    int32_t trie_insert(const Seq& symbols) {
        int32_t node = 0;
        for (auto sym : symbols) {
            const uint64_t key = pair_key(node, static_cast<int32_t>(sym));
            int32_t child = trie_child.get(key);
            if (child < 0) {
                child = static_cast<int32_t>(trie_word.size());
                trie_word.push_back(-2);
                trie_parent.push_back(node);
                trie_child.put(key, child);
            }
            node = child;
        }
        return node;
    }

    void pron_add(const std::string& w, const std::vector<int32_t>& ids) {
        const int32_t node = trie_insert(ids);
        const int32_t idx = static_cast<int32_t>(lex_words.size());
        lex_words.push_back(w);
        lex_lm.push_back(lm_word(w));
        if (node_words.size() < trie_word.size()) node_words.resize(trie_word.size());
        node_words[node].push_back(idx);
        trie_word[node] = lex_lm.back();
        max_variants = std::max(max_variants, static_cast<int>(node_words[node].size()));
    }

    void trie_add(const std::string& w, int32_t word) {
        std::vector<unsigned char> bytes(w.begin(), w.end());
        trie_word[trie_insert(bytes)] = word;
    }

    int32_t lm_word(const std::string& w) const { return lm ? lm->lookup_word(w) : -1; }

    // trie node after appending token c's characters at ``node`` (>= 0); -1 = off the trie
    inline int32_t trie_step(int32_t node, int c) const {
        if (!trie_next.empty()) return trie_next[static_cast<size_t>(node) * V + c];
        return trie_walk(node, c);
    }

    void finish_init() {
        use_words = lm != nullptr || lexicon;
        oov_mode = lm != nullptr && !lexicon;
        node_words.resize(pron ? trie_word.size() : 0);
        start_node.assign(V, 0);
        for (int c = 0; c < V; ++c)
            if (kind[c] == WORD_START) start_node[c] = trie_walk(0, c);
        // a dense (node, token) -> node table when it is small (character vocabularies)
        const size_t cells = trie_word.size() * static_cast<size_t>(V);
        if (use_words && cells <= max_dense_cells) {
            trie_next.assign(cells, -1);
            for (size_t n = 0; n < trie_word.size(); ++n)
                for (int c = 0; c < V; ++c)
                    trie_next[n * V + c] = trie_walk(static_cast<int32_t>(n), c);
        }
        if (lm && lexicon) init_lookahead();
    }

    // the best unigram ln P below each trie node (children are created after their parents)
    void init_lookahead() {
        const size_t n = trie_word.size();
        lookahead.assign(n, NEG_INF);
        int32_t ns;
        for (size_t i = 1; i < n; ++i) {
            if (pron) {
                for (int32_t idx : node_words[i])
                    lookahead[i] = std::max(lookahead[i], lm->score(0, lex_lm[idx], &ns) * LN10);
            } else if (trie_word[i] != -2) {
                lookahead[i] = lm->score(0, trie_word[i], &ns) * LN10;
            }
        }
        for (size_t i = n - 1; i >= 1; --i) {
            const int32_t p = trie_parent[i];
            if (p > 0) lookahead[p] = std::max(lookahead[p], lookahead[i]);
        }
        lookahead_gap = 0.0;
        for (size_t i = 1; i < n; ++i)
            if (lookahead[i] > NEG_INF) lookahead_gap = std::max(lookahead_gap, -lookahead[i]);
        // where each LM word ends in the trie (a word may have several pronunciations)
        const size_t W = lm->words.size();
        leaf_off.assign(W + 1, 0);
        auto each_leaf = [&](auto f) {
            for (size_t i = 1; i < n; ++i) {
                if (pron) {
                    for (int32_t idx : node_words[i])
                        if (lex_lm[idx] >= 0) f(lex_lm[idx], static_cast<int32_t>(i));
                } else if (trie_word[i] >= 0) {
                    f(trie_word[i], static_cast<int32_t>(i));
                }
            }
        };
        each_leaf([&](int32_t w, int32_t) { ++leaf_off[w + 1]; });
        for (size_t w = 0; w < W; ++w) leaf_off[w + 1] += leaf_off[w];
        leaf_node.assign(leaf_off[W], 0);
        std::vector<int32_t> fill(leaf_off.begin(), leaf_off.end() - 1);
        each_leaf([&](int32_t w, int32_t node) { leaf_node[fill[w]++] = node; });
    }

    std::vector<int32_t> trie_next;
    size_t max_dense_cells = size_t{1} << 23;
};

struct Options {
    int beam_size = 8;
    int token_topk = 0;
    double token_min_logp = -12.0;
    double alpha = 0.5;
    double beta = 1.0;
    double oov_penalty = 0.0;
    int nbest = 1;
    double beam_threshold = 0.0;
    int lm_lookahead = 1;  // 0 off, 1 unigram, 2 the LM context (back-off chain of the state)
};

struct Result {
    std::vector<int32_t> tokens;
    double score, ctc, lm;
    std::vector<int32_t> words;  // lexicon word indices (pronunciation lexicon only)
};

// What a prefix knows about its words.
struct WordState {
    int32_t lm_state = 0;
    int32_t trie = 0;      // node of the partial word in the word trie; -1 = off the trie
    int32_t n_words = 0;   // completed words
    int32_t n_oov = 0;     // words (the partial one included) outside the LM's vocabulary
    bool partial = false;  // the current word has characters
    int32_t last_word = -1;  // pronunciation lexicon: index of the last completed word
    double lm_score = 0.0; // ln P_lm of the completed words
    double la = 0.0;       // LM look-ahead of the partial word (ln; with the look-ahead on)
};

// A prefix of the search: a node of the prefix tree. Nodes are canonical (one per prefix, found
// through the (parent, token, variant) map), so two beam entries never hold the same prefix.
// The variant tells homophones apart: a token that completes a word whose pronunciation ends
// several words makes one child per word (variant = its rank in the trie node); otherwise 0.
struct Node {
    int32_t parent;
    int32_t token;
    WordState w;
    int8_t completed = 0;  // 0: the completion below is not computed yet; 1 valid; -1 rejected
    WordState done;        // the state after completing the partial word
    int32_t stamp = -1;    // frame in which the node is in the beam
    int32_t beam = 0;      // its index there
    int32_t variant = 0;
    int32_t done_at = -1;  // pronunciation lexicon: first completion in the pool (-1 = not yet)
    int32_t done_n = 0;    // ... and how many (one per word of the trie node)
};

struct Beam {
    int32_t node;
    double pb, pnb;
    double score;
};

// A new prefix (parent beam entry + token), scored before it is given a node.
struct Extension {
    int32_t from;  // beam index of the parent
    int32_t token;
    int64_t key;   // rank among equal scores: (beam, token, variant) order, after the kept prefixes
    int32_t variant;
    double pnb;
    double score;
    WordState w;
};

class Search {
  public:
    Search(const Decoder& d, const Options& o)
        : d_(d), o_(o), lookahead_(d.lookahead.empty() ? 0 : std::clamp(o.lm_lookahead, 0, 2)) {
        if (lookahead_ == 2) d_.lm->build_successors();
    }

    // Per frame: every beam entry keeps its prefix (blank, or a repeat of its last token) and
    // extends it by each candidate token. An extension that equals a prefix already in the beam
    // merges into it; the others are new prefixes, scored without creating nodes, and only those
    // that make the beam get one. Entries are ranked (score desc, then: kept prefixes in beam
    // order, then extensions in (beam, token) order), exactly as the Python reference does.
    std::vector<Result> run(const float* lp, int T) {
        nodes_.clear();
        pool_.clear();
        children_.reset(1024);
        Node root{-1, -1, WordState{}, 0, WordState{}, -1, 0, 0, -1, 0};
        root.w.lm_state = d_.lm ? d_.lm->begin_state() : 0;
        nodes_.push_back(root);
        std::vector<Beam> beams{{0, 0.0, NEG_INF, 0.0}};
        const int V = d_.V;
        const int64_t NV = d_.max_variants;
        const int k = (o_.token_topk > 0 && o_.token_topk < V) ? o_.token_topk : V;
        const size_t width = static_cast<size_t>(std::max(1, o_.beam_size));
        std::vector<int> cand, order(V);
        std::vector<Beam> kept, next;
        std::vector<Extension> ext;
        std::vector<int32_t> rank, merge_head, merge_next, heap, cands, is_cand(V, -1);
        std::vector<double> scores, kept_lb;
        int32_t nb = 0;
        // heap items: id < nb is kept prefix id (at its lower bound), else extension id - nb
        auto item_score = [&](int32_t id) { return id < nb ? kept_lb[id] : ext[id - nb].score; };
        auto item_key = [&](int32_t id) { return id < nb ? static_cast<int64_t>(id) : ext[id - nb].key; };
        // "a ranks above b": higher score, or equal score and earlier (kept prefixes in beam
        // order, then new ones in (beam, token) order); the heap keeps the lowest-ranked on top
        auto ranks_above = [&](int32_t a, int32_t b) {
            const double sa = item_score(a), sb = item_score(b);
            if (sa != sb) return sa > sb;
            return item_key(a) < item_key(b);
        };
        // how much completing a word can raise a score (for the early stop below: its bonus, and
        // with the look-ahead what the real LM score can restore); infinite when the weights or the
        // LM allow scores to rise
        std::vector<double> rise(V, 0.0);
        if (d_.use_words) {
            const bool bounded = o_.alpha >= 0 && o_.oov_penalty <= 0 && (!d_.lm || d_.lm->nonpositive);
            // (a context look-ahead lies at most the back-off chain below the unigram one)
            const double gap = d_.lookahead_gap - (lookahead_ == 2 ? d_.lm->chain_min : 0.0);
            const double restore = lookahead_ ? o_.alpha * gap : 0.0;
            for (int c = 0; c < V; ++c)
                if (d_.kind[c] == SEPARATOR || d_.kind[c] == WORD_START || !bounded)
                    rise[c] = bounded ? std::max(0.0, o_.beta + restore) : std::numeric_limits<double>::infinity();
        }
        for (int t = 0; t < T; ++t) {
            const float* frame = lp + static_cast<size_t>(t) * V;
            select_tokens(frame, k, order, cand);
            double best_pc = NEG_INF;  // the best candidate's log-prob, plus the rise of word ends
            for (int c : cand) {
                is_cand[c] = t;
                best_pc = std::max(best_pc, frame[c] + rise[c]);
            }
            const double p_blank = frame[d_.blank];
            nb = static_cast<int32_t>(beams.size());
            // which beam entries are children of which (for merging extensions into them)
            for (int32_t j = 0; j < nb; ++j) {
                nodes_[beams[j].node].stamp = t;
                nodes_[beams[j].node].beam = j;
            }
            merge_head.assign(nb, -1);
            merge_next.assign(nb, -1);
            for (int32_t j = 0; j < nb; ++j) {
                const int32_t p = nodes_[beams[j].node].parent;
                if (p >= 0 && nodes_[p].stamp == t) {
                    const int32_t i = nodes_[p].beam;
                    merge_next[j] = merge_head[i];
                    merge_head[i] = j;
                }
            }
            kept.resize(nb);
            kept_lb.resize(nb);
            heap.clear();
            ext.clear();
            for (int32_t j = 0; j < nb; ++j) {
                const double pb = logaddexp(beams[j].pb, beams[j].pnb) + p_blank;
                kept[j] = {beams[j].node, pb, NEG_INF, 0.0};
                // merges only add to a kept prefix: this is a lower bound of its final score
                kept_lb[j] = d_.use_words ? pb + word_term(nodes_[beams[j].node].w) : pb;
                heap.push_back(j);
                std::push_heap(heap.begin(), heap.end(), ranks_above);
            }
            for (int32_t i = 0; i < nb; ++i) {
                const Beam& b = beams[i];
                const double p_tot = logaddexp(b.pb, b.pnb);
                const int32_t last = nodes_[b.node].token;
                const double parent_words = d_.use_words ? word_term(nodes_[b.node].w) : 0.0;
                // merges: a repeat without blank stays the same prefix; an extension equal to a
                // kept prefix adds to it (after a blank, a repeat is a new token)
                if (last >= 0 && is_cand[last] == t)
                    kept[i].pnb = logaddexp(kept[i].pnb, b.pnb + frame[last]);
                for (int32_t j = merge_head[i]; j >= 0; j = merge_next[j]) {
                    const int32_t c = nodes_[beams[j].node].token;
                    if (is_cand[c] == t)
                        kept[j].pnb = logaddexp(kept[j].pnb, (c == last ? b.pb : p_tot) + frame[c]);
                }
                // New prefixes. Only the ``width`` best can make the beam: the heap holds the
                // best so far (kept prefixes at their lower bound, new ones exactly); skip what
                // even an upper bound cannot bring above its top: the whole beam entry at once
                // when its best token cannot.
                const double bound = p_tot + parent_words;
                if (heap.size() >= width && bound + best_pc < item_score(heap.front())) continue;
                for (int c : cand) {
                    const double pc = frame[c];
                    if (heap.size() >= width && bound + pc + rise[c] < item_score(heap.front())) continue;
                    const double val = (c == last ? b.pb : p_tot) + pc;
                    const int nv = variants(b.node, c);
                    for (int v = 0; v < nv; ++v) {
                        const bool full = heap.size() >= width;
                        int32_t j = merge_head[i];
                        while (j >= 0 && (nodes_[beams[j].node].token != c || nodes_[beams[j].node].variant != v))
                            j = merge_next[j];
                        if (j >= 0) continue;  // merged above
                        if (val == NEG_INF) continue;
                        Extension e{i, c, static_cast<int64_t>(nb) + (static_cast<int64_t>(i) * V + c) * NV + v,
                                    v, val, val, WordState{}};
                        if (d_.use_words) {
                            if (!extend_words(b.node, c, v, e.w)) continue;
                            e.score = val + word_term(e.w);
                        }
                        if (full) {
                            const int32_t top = heap.front();
                            const double ts = item_score(top);
                            if (e.score < ts || (e.score == ts && e.key > item_key(top))) continue;
                            std::pop_heap(heap.begin(), heap.end(), ranks_above);
                            heap.pop_back();
                        }
                        ext.push_back(e);
                        heap.push_back(nb + static_cast<int32_t>(ext.size()) - 1);
                        std::push_heap(heap.begin(), heap.end(), ranks_above);
                    }
                }
            }
            // rank all kept prefixes (now with their merged scores) and the surviving new ones
            cands.clear();
            for (int32_t j = 0; j < nb; ++j) cands.push_back(j);
            for (int32_t id : heap)
                if (id >= nb) cands.push_back(id);
            std::sort(cands.begin() + nb, cands.end(),
                      [&](int32_t a, int32_t b) { return ext[a - nb].key < ext[b - nb].key; });
            const size_t total = cands.size();
            scores.resize(total);
            for (int32_t j = 0; j < nb; ++j) {
                const double s = logaddexp(kept[j].pb, kept[j].pnb);
                scores[j] = d_.use_words ? s + word_term(nodes_[kept[j].node].w) : s;
            }
            for (size_t r = nb; r < total; ++r) scores[r] = ext[cands[r] - nb].score;
            rank.resize(total);
            for (size_t i = 0; i < total; ++i) rank[i] = static_cast<int32_t>(i);
            const size_t keep = std::min(total, width);
            auto better = [&scores](int32_t a, int32_t b) {
                if (scores[a] != scores[b]) return scores[a] > scores[b];
                return a < b;
            };
            if (keep < total) std::nth_element(rank.begin(), rank.begin() + keep, rank.end(), better);
            std::sort(rank.begin(), rank.begin() + keep, better);
            const double floor = o_.beam_threshold > 0 ? scores[rank[0]] - o_.beam_threshold : NEG_INF;
            next.clear();
            for (size_t r = 0; r < keep; ++r) {
                const int32_t idx = rank[r];
                if (r > 0 && scores[idx] < floor) break;
                if (static_cast<size_t>(idx) < kept.size()) {
                    Beam b = kept[idx];
                    b.score = scores[idx];
                    next.push_back(b);
                } else {
                    const Extension& e = ext[cands[idx] - nb];
                    next.push_back({child(beams[e.from].node, e.token, e.variant, e.w), NEG_INF, e.pnb, e.score});
                }
            }
            beams.swap(next);
        }
        return finish(beams);
    }

  private:
    void select_tokens(const float* frame, int k, std::vector<int>& order, std::vector<int>& cand) {
        cand.clear();
        const int V = d_.V;
        int best = 0;
        for (int c = 1; c < V; ++c)
            if (frame[c] > frame[best]) best = c;
        if (k < V) {
            for (int c = 0; c < V; ++c) order[c] = c;
            std::nth_element(order.begin(), order.begin() + (k - 1), order.end(),
                             [frame](int a, int b) {
                                 if (frame[a] != frame[b]) return frame[a] > frame[b];
                                 return a < b;
                             });
            std::sort(order.begin(), order.begin() + k);
            for (int i = 0; i < k; ++i) {
                const int c = order[i];
                if (c != d_.blank && (frame[c] >= o_.token_min_logp || c == best)) cand.push_back(c);
            }
        } else {
            for (int c = 0; c < V; ++c)
                if (c != d_.blank && (frame[c] >= o_.token_min_logp || c == best)) cand.push_back(c);
        }
    }

    inline double word_term(const WordState& w) const {
        double s = o_.alpha * w.lm_score + o_.beta * w.n_words + o_.oov_penalty * w.n_oov;
        if (lookahead_ && w.partial && w.trie > 0) s += o_.alpha * w.la;
        return s;
    }

    // The look-ahead of a partial word at trie ``node`` after LM state ``s``: unigram, the best
    // unigram ln P of the words below the node; context, the best over the state's back-off chain
    // s, suffix(s), ..., root of (back-offs summed so far + the best ln P of the words below the
    // node that the chain's state lists; the unigram one at the root).
    double lookahead_of(int32_t s, int32_t node) {
        if (lookahead_ == 1) return d_.lookahead[node];
        const NGramModel& lm = *d_.lm;
        double best = NEG_INF, acc = 0.0;
        while (s != 0) {
            context_scores(s);
            const int32_t i = ctx_index_.get(pair_key(s, node));
            if (i >= 0) best = std::max(best, acc + ctx_vals_[i]);
            acc += lm.backoff[s] * LN10;
            s = lm.suffix[s];
        }
        return std::max(best, acc + d_.lookahead[node]);
    }

    // (state, node) -> the best ln P(w | state) over the words w below the node that the state
    // lists, for the nodes that have one; computed once per state (kept across utterances)
    void context_scores(int32_t s) {
        if (ctx_done_.get(static_cast<uint64_t>(s)) >= 0) return;
        if (ctx_vals_.size() > (size_t{1} << 22)) {  // bound the memory (~130 MB a thread): start over
            ctx_done_.reset(1024);
            ctx_index_.reset(1024);
            ctx_vals_.clear();
        }
        ctx_done_.put(static_cast<uint64_t>(s), 1);
        const NGramModel& lm = *d_.lm;
        for (int64_t k = lm.succ_off[s]; k < lm.succ_off[s + 1]; ++k) {
            const int32_t w = lm.succ_word[k];  // an LM word id: leaf_off covers every one
            const double p = lm.prob[lm.succ_entry[k]] * LN10;
            for (int32_t j = d_.leaf_off[w]; j < d_.leaf_off[w + 1]; ++j) {
                for (int32_t node = d_.leaf_node[j]; node > 0; node = d_.trie_parent[node]) {
                    const uint64_t key = pair_key(s, node);
                    const int32_t i = ctx_index_.get(key);
                    if (i < 0) {
                        ctx_index_.put(key, static_cast<int32_t>(ctx_vals_.size()));
                        ctx_vals_.push_back(p);
                    } else if (ctx_vals_[i] < p) {
                        ctx_vals_[i] = p;
                    } else {
                        break;  // this node and so its ancestors already hold at least p
                    }
                }
            }
        }
    }

    // The state after completing the partial word of ``w`` (LM score, lexicon check, OOV count);
    // with a pronunciation lexicon, as word ``variant`` of its trie node.
    bool complete_word(const WordState& w, WordState& out, int variant = 0) const {
        out = w;
        if (!w.partial) return true;
        int32_t word = w.trie >= 0 ? d_.trie_word[w.trie] : -2;
        if (d_.pron && word != -2) {
            out.last_word = d_.node_words[w.trie][variant];
            word = d_.lex_lm[out.last_word];
        }
        if (d_.lexicon && word == -2) return false;
        if (d_.oov_mode && w.trie >= 0 && word == -2) out.n_oov += 1;
        if (d_.lm) {
            int32_t ns;
            out.lm_score += d_.lm->score(w.lm_state, word == -2 ? d_.lm->unk : word, &ns) * LN10;
            out.lm_state = ns;
        }
        out.n_words += 1;
        out.trie = 0;
        out.partial = false;
        return true;
    }

    // completion of a node's partial word, computed once per node
    bool completed(int32_t node) {
        Node& n = nodes_[node];
        if (n.completed == 0) n.completed = complete_word(n.w, n.done) ? 1 : -1;
        return n.completed > 0;
    }

    // Pronunciation lexicon: the completions of a node's partial word, one per word of its trie
    // node (one when nothing is partial, none off the lexicon), computed once per node.
    int completions(int32_t node) {
        if (nodes_[node].done_at < 0) {
            const WordState w = nodes_[node].w;
            int n = 1;
            if (w.partial) n = w.trie >= 0 ? static_cast<int>(d_.node_words[w.trie].size()) : 0;
            // without an LM homophones score alike: the first (the lexicon's preferred) stands for
            // them all, instead of filling the beam with copies of one prefix
            if (!d_.lm && n > 1) n = 1;
            nodes_[node].done_at = static_cast<int32_t>(pool_.size());
            nodes_[node].done_n = n;
            for (int v = 0; v < n; ++v) {
                pool_.emplace_back();
                complete_word(w, pool_.back(), v);
            }
        }
        return nodes_[node].done_n;
    }

    // children of ``parent`` by token ``c``: one per word completed (homophones), else 1
    inline int variants(int32_t parent, int c) {
        if (!d_.pron || d_.kind[c] == APPEND) return 1;
        return completions(parent);
    }

    // The word state of ``parent`` extended by token ``c`` (completing its word as ``variant``);
    // false if the lexicon forbids it.
    bool extend_words(int32_t parent, int c, int variant, WordState& out) {
        const int kind = d_.kind[c];
        if (kind == APPEND) {
            out = nodes_[parent].w;
            const std::string& s = d_.chars[c];
            if (s.empty()) return true;
            const int32_t before = out.trie;
            out.trie = before >= 0 ? d_.trie_step(before, c) : -1;
            out.partial = true;
            if (out.trie < 0) {
                if (d_.lexicon) return false;
                if (d_.oov_mode && before >= 0) out.n_oov += 1;
            }
            if (lookahead_ && out.trie > 0) out.la = lookahead_of(out.lm_state, out.trie);
            return true;
        }
        if (d_.pron) {
            if (variant >= completions(parent)) return false;
            out = pool_[nodes_[parent].done_at + variant];
        } else {
            if (!completed(parent)) return false;
            out = nodes_[parent].done;
        }
        if (kind == WORD_START && !d_.chars[c].empty()) {
            out.trie = d_.start_node[c];
            out.partial = true;
            if (out.trie < 0) {
                if (d_.lexicon) return false;
                if (d_.oov_mode) out.n_oov += 1;
            }
            if (lookahead_ && out.trie > 0) out.la = lookahead_of(out.lm_state, out.trie);
        }
        return true;
    }

    // The canonical node for prefix(parent) + c (as word ``variant``), created on first use.
    int32_t child(int32_t parent, int c, int variant, const WordState& w) {
        const uint64_t key = pair_key(parent, c + d_.V * variant);
        const int32_t found = children_.get(key);
        if (found >= 0) return found;
        const int32_t id = static_cast<int32_t>(nodes_.size());
        Node n{parent, c, w, 0, WordState{}, -1, 0, variant, -1, 0};
        nodes_.push_back(n);
        children_.put(key, id);
        return id;
    }

    std::vector<Result> finish(const std::vector<Beam>& beams) {
        std::vector<Result> hyps;
        for (const Beam& b : beams) {
            const double ctc = logaddexp(b.pb, b.pnb);
            Result r;
            tokens_of(b.node, r.tokens);
            if (!d_.use_words) {
                r.score = ctc;
                r.ctc = ctc;
                r.lm = 0.0;
                hyps.push_back(std::move(r));
                continue;
            }
            const int nv = d_.pron ? completions(b.node) : (completed(b.node) ? 1 : 0);
            for (int v = 0; v < nv; ++v) {  // a final homophone: one hypothesis per word
                WordState w = d_.pron ? pool_[nodes_[b.node].done_at + v] : nodes_[b.node].done;
                if (d_.lm) {
                    int32_t ns;
                    w.lm_score += d_.lm->score(w.lm_state, d_.lm->eos, &ns) * LN10;
                }
                r.ctc = ctc;
                r.lm = w.lm_score;
                r.score = ctc + word_term(w);
                if (d_.pron) words_of(b.node, w, r.words);
                hyps.push_back(r);
            }
        }
        if (hyps.empty()) {  // the lexicon rejected every final word: best CTC prefix instead
            size_t best = 0;
            for (size_t i = 1; i < beams.size(); ++i)
                if (logaddexp(beams[i].pb, beams[i].pnb) > logaddexp(beams[best].pb, beams[best].pnb))
                    best = i;
            Result r;
            tokens_of(beams[best].node, r.tokens);
            if (d_.pron) words_of(beams[best].node, nodes_[beams[best].node].w, r.words);  // words so far
            r.ctc = r.score = logaddexp(beams[best].pb, beams[best].pnb);
            r.lm = 0.0;
            hyps.push_back(std::move(r));
        }
        std::stable_sort(hyps.begin(), hyps.end(),
                         [](const Result& a, const Result& b) { return a.score > b.score; });
        if (static_cast<int>(hyps.size()) > std::max(1, o_.nbest)) hyps.resize(std::max(1, o_.nbest));
        return hyps;
    }

    // the lexicon words of a prefix whose final completion is ``last`` (pronunciation lexicon)
    void words_of(int32_t node, const WordState& last, std::vector<int32_t>& out) const {
        out.clear();
        if (last.n_words > nodes_[node].w.n_words) out.push_back(last.last_word);
        while (node > 0) {
            const Node& n = nodes_[node];
            if (n.w.n_words > nodes_[n.parent].w.n_words) out.push_back(n.w.last_word);
            node = n.parent;
        }
        std::reverse(out.begin(), out.end());
    }

    void tokens_of(int32_t node, std::vector<int32_t>& out) const {
        out.clear();
        while (node > 0) {
            out.push_back(nodes_[node].token);
            node = nodes_[node].parent;
        }
        std::reverse(out.begin(), out.end());
    }

    const Decoder& d_;
    const Options& o_;
    const int lookahead_;  // 0 off, 1 unigram, 2 context
    U64Map ctx_done_{1024}, ctx_index_{1024};  // context look-ahead: states done, (state, node) -> value
    std::vector<double> ctx_vals_;
    std::vector<Node> nodes_;
    std::vector<WordState> pool_;  // completions of nodes (pronunciation lexicon)
    U64Map children_{1024};
};
// ---------------------------------------------------------------------------------------------
// Python bindings (capsules; asr/decode/beam.py and lm.py hold them in small Python classes).

const char* LM_CAPSULE = "asr.decode._ctcdecode.NGramModel";
const char* DEC_CAPSULE = "asr.decode._ctcdecode.Decoder";

struct DecoderHolder {
    Decoder dec;
    PyObject* lm_ref = nullptr;  // keeps the LM capsule alive
};

void lm_destroy(PyObject* cap) {
    delete static_cast<NGramModel*>(PyCapsule_GetPointer(cap, LM_CAPSULE));
}

void dec_destroy(PyObject* cap) {
    auto* h = static_cast<DecoderHolder*>(PyCapsule_GetPointer(cap, DEC_CAPSULE));
    if (h) {
        Py_XDECREF(h->lm_ref);
        delete h;
    }
}

PyObject* lm_capsule_or_error(NGramModel* lm, const std::string& err) {
    if (!err.empty()) {
        delete lm;
        PyErr_SetString(PyExc_ValueError, err.c_str());
        return nullptr;
    }
    return PyCapsule_New(lm, LM_CAPSULE, lm_destroy);
}

PyObject* py_lm_from_arpa(PyObject*, PyObject* args) {
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf)) return nullptr;
    auto* lm = new NGramModel();
    std::string err;
    Py_BEGIN_ALLOW_THREADS
    try {
        lm->load(static_cast<const char*>(buf.buf), static_cast<size_t>(buf.len));
    } catch (const std::exception& e) {
        err = e.what();
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    return lm_capsule_or_error(lm, err);
}

// Read and parse a plain-text ARPA file without copying it into Python.
PyObject* py_lm_from_file(PyObject*, PyObject* args) {
    PyObject* path_obj;
    if (!PyArg_ParseTuple(args, "O&", PyUnicode_FSConverter, &path_obj)) return nullptr;
    const std::string path(PyBytes_AS_STRING(path_obj), static_cast<size_t>(PyBytes_GET_SIZE(path_obj)));
    Py_DECREF(path_obj);
    auto* lm = new NGramModel();
    std::string err;
    bool io_error = false;
    Py_BEGIN_ALLOW_THREADS
    std::vector<char> data;
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) {
        io_error = true;
    } else {
        char chunk[1 << 16];
        size_t got;
        while ((got = std::fread(chunk, 1, sizeof chunk, f)) > 0) data.insert(data.end(), chunk, chunk + got);
        io_error = std::ferror(f) != 0;
        std::fclose(f);
    }
    if (!io_error) {
        try {
            lm->load(data.data(), data.size());
        } catch (const std::exception& e) {
            err = e.what();
        }
    }
    Py_END_ALLOW_THREADS
    if (io_error) {
        delete lm;
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, path.c_str());
        return nullptr;
    }
    return lm_capsule_or_error(lm, err);
}

// (order, [n-grams per order], bytes held by the tables)
PyObject* py_lm_info(PyObject*, PyObject* args) {
    PyObject* cap;
    if (!PyArg_ParseTuple(args, "O", &cap)) return nullptr;
    auto* lm = static_cast<NGramModel*>(PyCapsule_GetPointer(cap, LM_CAPSULE));
    if (!lm) return nullptr;
    PyObject* counts = PyList_New(0);
    for (int n = 1; n <= lm->order && n < static_cast<int>(lm->header_counts.size()); ++n) {
        PyObject* c = PyLong_FromLong(lm->header_counts[n]);
        PyList_Append(counts, c);
        Py_DECREF(c);
    }
    return Py_BuildValue("(iNn)", lm->order, counts, static_cast<Py_ssize_t>(lm->memory_bytes()));
}

// the model's words (unigrams, <s> </s> <unk> included), in file order
PyObject* py_lm_words(PyObject*, PyObject* args) {
    PyObject* cap;
    if (!PyArg_ParseTuple(args, "O", &cap)) return nullptr;
    auto* lm = static_cast<NGramModel*>(PyCapsule_GetPointer(cap, LM_CAPSULE));
    if (!lm) return nullptr;
    PyObject* out = PyList_New(static_cast<Py_ssize_t>(lm->words.size()));
    for (size_t i = 0; i < lm->words.size(); ++i) {
        PyObject* w = PyUnicode_DecodeUTF8(lm->words[i].data(), static_cast<Py_ssize_t>(lm->words[i].size()),
                                           "replace");
        if (!w) {
            Py_DECREF(out);
            return nullptr;
        }
        PyList_SET_ITEM(out, static_cast<Py_ssize_t>(i), w);
    }
    return out;
}

PyObject* py_lm_order(PyObject*, PyObject* args) {
    PyObject* cap;
    if (!PyArg_ParseTuple(args, "O", &cap)) return nullptr;
    auto* lm = static_cast<NGramModel*>(PyCapsule_GetPointer(cap, LM_CAPSULE));
    if (!lm) return nullptr;
    return PyLong_FromLong(lm->order);
}

PyObject* py_lm_sentence(PyObject*, PyObject* args) {
    PyObject *cap, *seq;
    int bos, eos;
    if (!PyArg_ParseTuple(args, "OOpp", &cap, &seq, &bos, &eos)) return nullptr;
    auto* lm = static_cast<NGramModel*>(PyCapsule_GetPointer(cap, LM_CAPSULE));
    if (!lm) return nullptr;
    PyObject* fast = PySequence_Fast(seq, "words must be a sequence of str");
    if (!fast) return nullptr;
    int32_t state = bos ? lm->begin_state() : 0, ns;
    double total = 0.0;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    for (Py_ssize_t i = 0; i < n; ++i) {
        const char* w = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(fast, i));
        if (!w) {
            Py_DECREF(fast);
            return nullptr;
        }
        total += lm->score(state, lm->lookup_word(w), &ns);
        state = ns;
    }
    Py_DECREF(fast);
    if (eos) total += lm->score(state, lm->eos, &ns);
    return PyFloat_FromDouble(total);
}

PyObject* py_decoder_new(PyObject*, PyObject* args) {
    PyObject *tok_seq, *kind_seq, *lm_cap, *lex_seq;
    int blank;
    Py_ssize_t dense = Py_ssize_t{1} << 23;
    if (!PyArg_ParseTuple(args, "OOiOO|n", &tok_seq, &kind_seq, &blank, &lm_cap, &lex_seq, &dense))
        return nullptr;
    auto* h = new DecoderHolder();
    Decoder& d = h->dec;
    d.max_dense_cells = static_cast<size_t>(std::max<Py_ssize_t>(0, dense));
    PyObject* toks = PySequence_Fast(tok_seq, "token_bytes must be a sequence");
    PyObject* kinds = toks ? PySequence_Fast(kind_seq, "kinds must be a sequence") : nullptr;
    if (!toks || !kinds) {
        Py_XDECREF(toks);
        delete h;
        return nullptr;
    }
    d.V = static_cast<int>(PySequence_Fast_GET_SIZE(toks));
    d.blank = blank;
    bool ok = d.V > 0 && PySequence_Fast_GET_SIZE(kinds) == d.V && blank >= 0 && blank < d.V;
    if (!ok) PyErr_SetString(PyExc_ValueError, "token_bytes and kinds must have the same non-zero length");
    for (int i = 0; ok && i < d.V; ++i) {
        char* s;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(PySequence_Fast_GET_ITEM(toks, i), &s, &len) < 0) {
            ok = false;
            break;
        }
        d.chars.emplace_back(s, static_cast<size_t>(len));
        d.kind.push_back(static_cast<int>(PyLong_AsLong(PySequence_Fast_GET_ITEM(kinds, i))));
    }
    Py_DECREF(toks);
    Py_DECREF(kinds);
    if (ok && PyErr_Occurred()) ok = false;
    if (ok && lm_cap != Py_None) {
        d.lm = static_cast<NGramModel*>(PyCapsule_GetPointer(lm_cap, LM_CAPSULE));
        if (!d.lm) ok = false;
        Py_INCREF(lm_cap);
        h->lm_ref = lm_cap;
    }
    d.trie_word.push_back(-2);
    if (ok && lex_seq != Py_None) {
        d.lexicon = true;
        PyObject* lex = PySequence_Fast(lex_seq, "lexicon must be a sequence of str or (str, ids)");
        if (!lex) ok = false;
        const Py_ssize_t n_lex = ok ? PySequence_Fast_GET_SIZE(lex) : 0;
        d.pron = n_lex > 0 && PyTuple_Check(PySequence_Fast_GET_ITEM(lex, 0));
        std::vector<int32_t> ids;
        for (Py_ssize_t i = 0; ok && i < n_lex; ++i) {
            PyObject* item = PySequence_Fast_GET_ITEM(lex, i);
            if (!d.pron) {
                const char* w = PyUnicode_AsUTF8(item);
                if (!w) {
                    ok = false;
                    break;
                }
                if (*w) d.trie_add(w, d.lm ? d.lm_word(w) : -1);
                continue;
            }
            PyObject *word, *seq;
            if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "UO", &word, &seq)) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_TypeError, "lexicon items must all be str or all be (str, ids)");
                ok = false;
                break;
            }
            const char* w = PyUnicode_AsUTF8(word);
            PyObject* fast = w ? PySequence_Fast(seq, "a pronunciation must be a sequence of token ids") : nullptr;
            if (!fast) {
                ok = false;
                break;
            }
            ids.clear();
            for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(fast); ++k) {
                const long id = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, k));
                if (id < 0 || id >= d.V || d.kind[id] != APPEND) {
                    if (!PyErr_Occurred())
                        PyErr_Format(PyExc_ValueError, "word '%s': token id %ld is not a unit of the vocabulary",
                                     w, id);
                    ok = false;
                    break;
                }
                ids.push_back(static_cast<int32_t>(id));
            }
            Py_DECREF(fast);
            if (ok && !ids.empty()) d.pron_add(w, ids);
        }
        Py_XDECREF(lex);
    } else if (ok && d.lm) {
        for (size_t i = 0; i < d.lm->words.size(); ++i) {
            const std::string& w = d.lm->words[i];
            if (w != "<s>" && w != "</s>" && w != "<unk>" && !w.empty()) d.trie_add(w, static_cast<int32_t>(i));
        }
    }
    d.finish_init();
    if (!ok) {
        Py_XDECREF(h->lm_ref);
        delete h;
        return nullptr;
    }
    return PyCapsule_New(h, DEC_CAPSULE, dec_destroy);
}

PyObject* py_decode(PyObject*, PyObject* args) {
    PyObject* cap;
    Py_buffer lp_buf, len_buf;
    Options o;
    int threads;
    if (!PyArg_ParseTuple(args, "Oy*y*iiddddidi|i", &cap, &lp_buf, &len_buf, &o.beam_size, &o.token_topk,
                          &o.token_min_logp, &o.alpha, &o.beta, &o.oov_penalty, &o.nbest, &o.beam_threshold,
                          &threads, &o.lm_lookahead))
        return nullptr;
    auto release = [&]() {
        PyBuffer_Release(&lp_buf);
        PyBuffer_Release(&len_buf);
    };
    auto* h = static_cast<DecoderHolder*>(PyCapsule_GetPointer(cap, DEC_CAPSULE));
    if (!h) {
        release();
        return nullptr;
    }
    const Decoder& d = h->dec;
    const Py_ssize_t B = len_buf.len / static_cast<Py_ssize_t>(sizeof(int64_t));
    if (B <= 0 || lp_buf.len % (static_cast<Py_ssize_t>(sizeof(float)) * B * d.V) != 0) {
        release();
        PyErr_SetString(PyExc_ValueError, "log_probs must be float32 (B, T, V) with V = len(tokens)");
        return nullptr;
    }
    const Py_ssize_t T = lp_buf.len / static_cast<Py_ssize_t>(sizeof(float)) / B / d.V;
    const float* lp = static_cast<const float*>(lp_buf.buf);
    const int64_t* lens = static_cast<const int64_t*>(len_buf.buf);
    for (Py_ssize_t b = 0; b < B; ++b) {
        if (lens[b] < 0 || lens[b] > T) {
            release();
            PyErr_Format(PyExc_ValueError, "utterance %zd: length %lld is outside [0, %zd]", b,
                         static_cast<long long>(lens[b]), T);
            return nullptr;
        }
    }
    std::vector<std::vector<Result>> results(B);
    std::string err;  // the first worker's error, written under err_mu (workers can fail at once)
    std::mutex err_mu;
    Py_BEGIN_ALLOW_THREADS
    std::atomic<Py_ssize_t> next_utt{0};
    auto worker = [&]() {
        Search search(d, o);
        try {
            while (true) {
                const Py_ssize_t b = next_utt.fetch_add(1);
                if (b >= B) break;
                results[b] = search.run(lp + static_cast<size_t>(b) * T * d.V, static_cast<int>(lens[b]));
            }
        } catch (const std::exception& e) {
            std::lock_guard<std::mutex> lock(err_mu);
            if (err.empty()) err = e.what();
        }
    };
    const int n_threads = static_cast<int>(std::max<Py_ssize_t>(1, std::min<Py_ssize_t>(threads, B)));
    if (n_threads <= 1) {
        worker();
    } else {
        std::vector<std::thread> pool;
        for (int i = 0; i < n_threads; ++i) pool.emplace_back(worker);
        for (auto& th : pool) th.join();
    }
    Py_END_ALLOW_THREADS
    release();
    if (!err.empty()) {
        PyErr_SetString(PyExc_RuntimeError, err.c_str());
        return nullptr;
    }
    PyObject* out = PyList_New(B);
    for (Py_ssize_t b = 0; b < B; ++b) {
        PyObject* hyps = PyList_New(static_cast<Py_ssize_t>(results[b].size()));
        for (size_t i = 0; i < results[b].size(); ++i) {
            const Result& r = results[b][i];
            PyObject* toks = PyList_New(static_cast<Py_ssize_t>(r.tokens.size()));
            for (size_t j = 0; j < r.tokens.size(); ++j) PyList_SET_ITEM(toks, j, PyLong_FromLong(r.tokens[j]));
            PyObject* words = Py_None;
            if (d.pron) {
                words = PyList_New(static_cast<Py_ssize_t>(r.words.size()));
                for (size_t j = 0; j < r.words.size(); ++j) {
                    const std::string& w = d.lex_words[r.words[j]];
                    PyList_SET_ITEM(words, j, PyUnicode_FromStringAndSize(w.data(), static_cast<Py_ssize_t>(w.size())));
                }
            } else {
                Py_INCREF(words);
            }
            PyList_SET_ITEM(hyps, i, Py_BuildValue("(NdddN)", toks, r.score, r.ctc, r.lm, words));
        }
        PyList_SET_ITEM(out, b, hyps);
    }
    return out;
}

PyMethodDef methods[] = {
    {"lm_from_arpa", py_lm_from_arpa, METH_VARARGS, "Parse ARPA text (bytes) into an n-gram model."},
    {"lm_from_file", py_lm_from_file, METH_VARARGS, "Read and parse a plain ARPA file."},
    {"lm_order", py_lm_order, METH_VARARGS, "Order of an n-gram model."},
    {"lm_info", py_lm_info, METH_VARARGS, "(order, n-grams per order, bytes) of an n-gram model."},
    {"lm_words", py_lm_words, METH_VARARGS, "The words of an n-gram model, in file order."},
    {"lm_sentence", py_lm_sentence, METH_VARARGS, "log10 P(words) under the model."},
    {"decoder_new", py_decoder_new, METH_VARARGS, "Build a decoder for a vocabulary, LM and lexicon."},
    {"decode", py_decode, METH_VARARGS, "Prefix beam search over a batch of log-probabilities."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ctcdecode", "CTC prefix beam search (C++).", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__ctcdecode(void) { return PyModule_Create(&module); }
