//! The false-hit guard: a cheap lexical check that two prompts ask for the same thing in the
//! details sentence embeddings are blind to.
//!
//! Embeddings place "What is 2+2?" and "What is 2+3?" (or "Is it safe?" and "Is it not
//! safe?") close together, but a cached answer for one is wrong for the other. After the
//! vector search finds a candidate above the threshold, [`compatible`] must also agree before
//! the semantic cache serves it. It compares five features and requires all to match
//! ([`check`] names the first that fails, for a metric label):
//!
//! - **Numbers**: the set of numeric values as canonical strings: digits
//!   (`1,000` = `1000`, `2.50` = `2.5`), number words (`twenty five` = `25`, `two hundred` =
//!   `200`), ordinals (`3rd` = `third`, distinct from `3`), percentages (`5%` = `5 percent`,
//!   distinct from `5`), attached units (`10 mg` = `10mg` = `10 milligrams`, distinct from
//!   `10 g`), currency signs and negative signs. When numbers are present, the arithmetic
//!   operators between them (`+`/`plus`, `*`/`x`/`times`, ...) must agree too.
//! - **Negation**: the number of negation cues (`not`, `no`, `never`, `n't`, `without`,
//!   `none`, `cannot`, ...) must be equal.
//! - **Entities**: capitalised words not at a sentence start, acronyms, words with inner
//!   capitals, letters glued to digits (`python3`, `IPv6`), quoted strings and code-like
//!   tokens (identifiers, paths, URLs). Each side's entities must **occur** in the other text,
//!   compared case-insensitively. Presence rather than set equality is deliberate: users
//!   often type in lower case ("capital of france"), and that must still match "capital of
//!   France", while "Paris" against "Berlin" fails because neither word occurs on the other
//!   side. A capitalised first word counts as an entity unless it is a common sentence opener
//!   ("What", "Explain", ...), so "Paris is ..." against "Berlin is ..." is caught too.
//! - **Direction**: word order is free in general ("from Paris to London" and "to London
//!   from Paris" are the same question), but a role marker (`to`, `into`, `than`, `for`,
//!   `from`, `in`, `per`) must not move from one shared word to another: "convert Celsius to
//!   Fahrenheit" vs "convert Fahrenheit to Celsius", "a string to an integer" vs "an integer
//!   to a string", "Is Rust faster than Go" vs "Is Go faster than Rust" all differ. Antonym
//!   groups (before/after, above/below, more/less, increase/decrease, min/max, first/last,
//!   buy/sell, ascending/descending, turn on/off, log in/out, ...) conflict when both texts
//!   use the group with different members; a text silent on the group does not conflict.
//! - **Minimal pairs**: two texts whose content words (function words, numbers and negations
//!   left out, plurals folded) are identical except for one unrelated word are different
//!   questions: "fridge" vs "freezer", "sort by value" vs "sort by key". This is the one
//!   check that also rejects real paraphrases (a one-word synonym swap, "tallest" vs
//!   "highest"); on the evaluation set it costs about 9 % of paraphrase hits and removes all
//!   remaining false hits, which no embedding threshold could do (those pairs score 0.88 to
//!   0.96).
//!
//! The guard errs towards "not compatible": a false negative costs one upstream call, a false
//! positive serves a wrong answer. It is English-only; for other languages it still checks
//! numbers, acronyms, capitalised words and code.

use std::collections::{BTreeMap, BTreeSet};

/// Whether a cached answer for prompt `a` may be served for prompt `b` (symmetric).
///
/// Call it only after the embedding similarity has cleared the threshold: it checks that
/// numbers, negation, entities and direction agree, not that the topics are the same.
pub fn compatible(a: &str, b: &str) -> bool {
    check(a, b).is_ok()
}

/// The first feature on which two prompts disagree, for metrics and debugging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// Different numbers, ordinals, percentages or quantities.
    Numbers,
    /// Same numbers, different arithmetic ("2+2" vs "2*2").
    Operators,
    /// Different count of negation cues.
    Negation,
    /// An entity, quoted string or code token of one side is absent from the other.
    Entities,
    /// Two or more shared words swapped roles ("X to Y" vs "Y to X").
    Roles,
    /// Opposite members of an antonym group (before/after, buy/sell, turn on/off, ...).
    Antonyms,
    /// Identical but for one content word ("fridge" vs "freezer").
    Substitution,
}

impl Mismatch {
    /// A stable lower-case label, suitable as a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Numbers => "numbers",
            Self::Operators => "operators",
            Self::Negation => "negation",
            Self::Entities => "entities",
            Self::Roles => "roles",
            Self::Antonyms => "antonyms",
            Self::Substitution => "substitution",
        }
    }
}

/// Like [`compatible`], but says which check failed first.
pub fn check(a: &str, b: &str) -> Result<(), Mismatch> {
    let (fa, fb) = (Features::extract(a), Features::extract(b));
    if fa.numbers != fb.numbers {
        return Err(Mismatch::Numbers);
    }
    if !fa.numbers.is_empty() && fa.operators != fb.operators {
        return Err(Mismatch::Operators);
    }
    if fa.negations != fb.negations {
        return Err(Mismatch::Negation);
    }
    if !fa.entities_occur_in(&fb) || !fb.entities_occur_in(&fa) {
        return Err(Mismatch::Entities);
    }
    if !roles_agree(&fa, &fb) {
        return Err(Mismatch::Roles);
    }
    if !antonyms_agree(&fa, &fb) {
        return Err(Mismatch::Antonyms);
    }
    if single_substitution(&fa.content, &fb.content) {
        return Err(Mismatch::Substitution);
    }
    Ok(())
}

// === Word lists ===

/// Number words with their values. "one" is handled separately (see `is_pronoun_one`).
const NUMBER_WORDS: &[(&str, u64)] = &[
    ("zero", 0),
    ("one", 1),
    ("two", 2),
    ("three", 3),
    ("four", 4),
    ("five", 5),
    ("six", 6),
    ("seven", 7),
    ("eight", 8),
    ("nine", 9),
    ("ten", 10),
    ("eleven", 11),
    ("twelve", 12),
    ("thirteen", 13),
    ("fourteen", 14),
    ("fifteen", 15),
    ("sixteen", 16),
    ("seventeen", 17),
    ("eighteen", 18),
    ("nineteen", 19),
    ("twenty", 20),
    ("thirty", 30),
    ("forty", 40),
    ("fifty", 50),
    ("sixty", 60),
    ("seventy", 70),
    ("eighty", 80),
    ("ninety", 90),
    ("dozen", 12),
];

/// Multipliers that scale the number words before them ("two hundred", "3 million").
const SCALE_WORDS: &[(&str, u64)] = &[
    ("hundred", 100),
    ("thousand", 1_000),
    ("million", 1_000_000),
    ("billion", 1_000_000_000),
    ("trillion", 1_000_000_000_000),
];

const ORDINAL_WORDS: &[(&str, u64)] = &[
    ("first", 1),
    ("second", 2),
    ("third", 3),
    ("fourth", 4),
    ("fifth", 5),
    ("sixth", 6),
    ("seventh", 7),
    ("eighth", 8),
    ("ninth", 9),
    ("tenth", 10),
    ("eleventh", 11),
    ("twelfth", 12),
    ("thirteenth", 13),
    ("fourteenth", 14),
    ("fifteenth", 15),
    ("sixteenth", 16),
    ("seventeenth", 17),
    ("eighteenth", 18),
    ("nineteenth", 19),
    ("twentieth", 20),
];

/// Unit spellings and their canonical form. A unit right after a number becomes part of that
/// number; a unit anywhere is also a key for the `to`/`into` target check.
const UNITS: &[(&str, &str)] = &[
    ("mg", "mg"),
    ("milligram", "mg"),
    ("milligrams", "mg"),
    ("mcg", "mcg"),
    ("g", "g"),
    ("gram", "g"),
    ("grams", "g"),
    ("kg", "kg"),
    ("kgs", "kg"),
    ("kilogram", "kg"),
    ("kilograms", "kg"),
    ("lb", "lb"),
    ("lbs", "lb"),
    ("pound", "lb"),
    ("pounds", "lb"),
    ("oz", "oz"),
    ("ounce", "oz"),
    ("ounces", "oz"),
    ("ml", "ml"),
    ("milliliter", "ml"),
    ("milliliters", "ml"),
    ("millilitre", "ml"),
    ("millilitres", "ml"),
    ("l", "l"),
    ("liter", "l"),
    ("liters", "l"),
    ("litre", "l"),
    ("litres", "l"),
    ("cup", "cup"),
    ("cups", "cup"),
    ("tbsp", "tbsp"),
    ("tablespoon", "tbsp"),
    ("tablespoons", "tbsp"),
    ("tsp", "tsp"),
    ("teaspoon", "tsp"),
    ("teaspoons", "tsp"),
    ("mm", "mm"),
    ("cm", "cm"),
    ("m", "m"),
    ("meter", "m"),
    ("meters", "m"),
    ("metre", "m"),
    ("metres", "m"),
    ("km", "km"),
    ("kilometer", "km"),
    ("kilometers", "km"),
    ("kilometre", "km"),
    ("kilometres", "km"),
    ("mi", "mi"),
    ("mile", "mi"),
    ("miles", "mi"),
    ("ft", "ft"),
    ("foot", "ft"),
    ("feet", "ft"),
    ("inch", "in"),
    ("inches", "in"),
    ("ms", "ms"),
    ("millisecond", "ms"),
    ("milliseconds", "ms"),
    ("s", "s"),
    ("sec", "s"),
    ("secs", "s"),
    ("second", "s"),
    ("seconds", "s"),
    ("min", "min"),
    ("mins", "min"),
    ("minute", "min"),
    ("minutes", "min"),
    ("h", "h"),
    ("hr", "h"),
    ("hrs", "h"),
    ("hour", "h"),
    ("hours", "h"),
    ("day", "day"),
    ("days", "day"),
    ("week", "week"),
    ("weeks", "week"),
    ("month", "month"),
    ("months", "month"),
    ("year", "year"),
    ("years", "year"),
    ("kb", "kb"),
    ("mb", "mb"),
    ("gb", "gb"),
    ("tb", "tb"),
    ("c", "c"),
    ("celsius", "c"),
    ("f", "f"),
    ("fahrenheit", "f"),
    ("kelvin", "k"),
    ("degree", "deg"),
    ("degrees", "deg"),
    ("dollar", "usd"),
    ("dollars", "usd"),
    ("usd", "usd"),
    ("euro", "eur"),
    ("euros", "eur"),
    ("eur", "eur"),
];

/// Negation cues. Contractions ending in `n't` (and the apostrophe-less spellings below) are
/// recognised separately.
const NEGATIONS: &[&str] = &[
    "not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "nowhere", "without",
    "cannot", "dont", "doesnt", "didnt", "cant", "couldnt", "wont", "wouldnt", "shouldnt", "isnt",
    "arent", "wasnt", "werent", "havent", "hasnt", "hadnt", "mustnt", "neednt", "aint",
];

/// Antonym groups: pole 0 and pole 1 with their inflections. Two texts conflict on a group
/// when both use it and the poles they use differ.
const ANTONYMS: &[(&[&str], &[&str])] = &[
    (&["before"], &["after"]),
    (&["above"], &["below", "beneath", "under"]),
    (&["more", "most"], &["less", "least", "fewer", "fewest"]),
    (
        &[
            "increase",
            "increases",
            "increased",
            "increasing",
            "raise",
            "raising",
        ],
        &[
            "decrease",
            "decreases",
            "decreased",
            "decreasing",
            "reduce",
            "reducing",
            "lower",
        ],
    ),
    (
        &["min", "minimum", "minimal"],
        &["max", "maximum", "maximal"],
    ),
    (&["first", "earliest"], &["last", "latest", "final"]),
    (
        &["buy", "buys", "buying", "bought", "purchase", "purchasing"],
        &["sell", "sells", "selling", "sold"],
    ),
    (&["higher", "highest"], &["lower", "lowest"]),
    (
        &["larger", "largest", "bigger", "biggest"],
        &["smaller", "smallest"],
    ),
    (
        &["add", "adding"],
        &["remove", "removing", "delete", "deleting"],
    ),
    (&["enable", "enabling"], &["disable", "disabling"]),
    (&["upload", "uploading"], &["download", "downloading"]),
    (&["import", "importing"], &["export", "exporting"]),
    (
        &["encrypt", "encrypting", "encryption"],
        &["decrypt", "decrypting", "decryption"],
    ),
    (&["encode", "encoding"], &["decode", "decoding"]),
    (
        &["deposit", "deposits"],
        &["withdraw", "withdrawal", "withdrawals"],
    ),
    (
        &["arrive", "arrival", "arrivals"],
        &["depart", "departure", "departures"],
    ),
    (&["north", "northern"], &["south", "southern"]),
    (&["east", "eastern"], &["west", "western"]),
    (&["ascending"], &["descending"]),
    (&["soft", "softer"], &["hard", "harder"]),
    (
        &["hot", "hotter", "hottest", "warm"],
        &["cold", "colder", "coldest", "cool"],
    ),
    (&["boiling", "boil"], &["freezing", "freeze"]),
    (
        &["start", "starting", "started"],
        &["stop", "stopping", "stopped"],
    ),
    (&["open", "opening"], &["close", "closing"]),
    (&["gain", "gaining"], &["lose", "losing"]),
    (&["faster", "fastest"], &["slower", "slowest"]),
    (&["cheap", "cheaper", "cheapest"], &["expensive"]),
    (&["early", "earlier", "earliest"], &["late", "later"]),
    (&["push", "pushing"], &["pull", "pulling"]),
    (&["login"], &["logout"]),
    (&["include", "including"], &["exclude", "excluding"]),
    (&["maximize", "maximise"], &["minimize", "minimise"]),
];

/// Particles that are antonyms only after a phrasal verb: "turn on" / "turn off", "log in" /
/// "log out". On their own "on" and "in" are ordinary prepositions.
const PARTICLES: &[(&[&str], &[&str])] = &[(&["on"], &["off"]), (&["in"], &["out"])];

/// Verbs that take the particles above.
const PHRASAL_VERBS: &[&str] = &[
    "turn",
    "turns",
    "turned",
    "turning",
    "switch",
    "switched",
    "switching",
    "log",
    "logged",
    "logging",
    "sign",
    "signed",
    "signing",
    "opt",
    "opted",
    "check",
    "checked",
    "checking",
    "power",
    "powered",
    "plug",
    "plugged",
    "zoom",
    "zoomed",
];

/// Prepositions that give the word after them (past any determiner) a role. When two or more
/// words shared by both texts change role, the texts describe a swap ("string to integer" vs
/// "integer to string", "butter for oil" vs "oil for butter").
const ROLE_MARKERS: &[&str] = &["to", "into", "than", "for", "from", "in", "per"];

/// Determiners skipped between a role marker and its word ("to *a* string").
const DETERMINERS: &[&str] = &[
    "a", "an", "the", "my", "your", "our", "their", "his", "her", "its", "this", "that", "these",
    "those", "some", "each", "every",
];

/// Function words left out of the content sequence used by the minimal-pair check.
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "my", "your", "our", "their", "his", "her", "its", "this", "that", "these",
    "those", "i", "you", "we", "they", "he", "she", "it", "me", "us", "them", "do", "does", "did",
    "can", "could", "should", "would", "will", "shall", "may", "might", "must", "is", "are", "was",
    "were", "be", "been", "am", "how", "what", "whats", "which", "who", "whom", "whose", "why",
    "when", "where", "of", "to", "in", "on", "at", "for", "with", "by", "from", "about", "into",
    "and", "or", "but", "if", "so", "there", "here", "please", "some", "any", "way", "best",
    "good", "get", "have", "has", "had", "need", "want", "tell", "explain", "s",
];

/// Common words that may start a prompt capitalised without being a name. A capitalised
/// first word outside this list is treated as an entity ("Paris is ...").
const COMMON_OPENERS: &[&str] = &[
    "a",
    "about",
    "after",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "before",
    "best",
    "but",
    "by",
    "calculate",
    "can",
    "check",
    "choose",
    "compare",
    "compute",
    "convert",
    "could",
    "create",
    "define",
    "describe",
    "did",
    "do",
    "does",
    "each",
    "easy",
    "every",
    "explain",
    "find",
    "fix",
    "for",
    "from",
    "generate",
    "get",
    "give",
    "good",
    "had",
    "has",
    "have",
    "hello",
    "help",
    "hey",
    "hi",
    "how",
    "i",
    "if",
    "im",
    "in",
    "install",
    "is",
    "it",
    "its",
    "just",
    "let",
    "lets",
    "list",
    "looking",
    "make",
    "may",
    "me",
    "might",
    "my",
    "name",
    "need",
    "no",
    "not",
    "now",
    "of",
    "ok",
    "okay",
    "on",
    "or",
    "our",
    "please",
    "pls",
    "quick",
    "recommend",
    "should",
    "show",
    "simple",
    "so",
    "some",
    "suggest",
    "summarise",
    "summarize",
    "tell",
    "thanks",
    "the",
    "then",
    "there",
    "these",
    "this",
    "those",
    "to",
    "translate",
    "trying",
    "use",
    "using",
    "was",
    "we",
    "were",
    "what",
    "whats",
    "when",
    "where",
    "wheres",
    "which",
    "who",
    "whos",
    "why",
    "will",
    "with",
    "would",
    "write",
    "you",
    "your",
    "hows",
    "whom",
    "whose",
    "difference",
    "ways",
    "steps",
    "cook",
    "bake",
    "book",
    "cancel",
    "reset",
    "change",
    "set",
    "run",
    "add",
    "remove",
    "delete",
    "update",
    "send",
    "buy",
    "sell",
    "pay",
    "order",
    "return",
    "track",
    "open",
    "close",
    "is",
    "shall",
    "must",
    "one",
    "two",
    "three",
    "four",
    "five",
    "ten",
    "first",
    "last",
    "average",
    "typical",
    "normal",
    "roughly",
    "approximately",
    "recipe",
    "instructions",
    "tips",
    "advice",
    "meaning",
    "definition",
    "cost",
    "price",
    "time",
    "distance",
    "capital",
    "differentiate",
    "integrate",
    "solve",
    "simplify",
    "evaluate",
    "factor",
    "prove",
    "rewrite",
    "refactor",
    "debug",
    "draft",
    "plan",
    "estimate",
    "predict",
    "build",
    "implement",
    "design",
    "teach",
    "outline",
    "sort",
    "reverse",
    "merge",
    "format",
    "parse",
    "read",
    "print",
];

// === Extraction ===

/// The features of one text that [`compatible`] compares.
#[derive(Debug, Default)]
struct Features {
    /// Canonical numbers, e.g. `10`, `2.5`, `ord:3`, `50%`, `10 mg`, `-4`, `$20`.
    numbers: BTreeSet<String>,
    /// Arithmetic operators between numbers, canonicalised to `+ - * / ^ =`.
    operators: BTreeSet<char>,
    /// Number of negation cues.
    negations: usize,
    /// Lower-cased single-word entities.
    entities: BTreeSet<String>,
    /// Lower-cased quoted strings and code-like tokens (matched as substrings).
    literals: BTreeSet<String>,
    /// Every lower-cased word of the text (for the presence check).
    words: BTreeSet<String>,
    /// The whole text, lower-cased (for literal presence).
    lower: String,
    /// Stemmed words of the text (for the role check).
    stems: BTreeSet<String>,
    /// Stemmed word -> the role markers that precede it somewhere in the text.
    roles: BTreeMap<String, BTreeSet<&'static str>>,
    /// Stemmed content words in order (function words and numbers left out).
    content: Vec<String>,
    /// Per antonym group, which poles occur.
    poles: BTreeMap<usize, BTreeSet<u8>>,
}

/// One lexical token of a text.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A word: original spelling, lower case, and whether it starts a sentence.
    Word {
        orig: String,
        lower: String,
        sentence_start: bool,
    },
    /// A run of digits with an optional decimal part, canonicalised, with a sign or currency
    /// prefix when one was glued to it.
    Num(String),
    /// A single symbol character.
    Sym(char),
}

impl Features {
    fn extract(text: &str) -> Self {
        let mut f = Self {
            lower: text.to_lowercase(),
            ..Self::default()
        };
        f.collect_quotes(text);
        let toks = f.tokenize(text);
        f.scan(&toks);
        f
    }

    /// Quoted strings ("..", “..”, `..`) are literals that must occur verbatim on the other side.
    /// Single quotes are skipped: they are far more often apostrophes.
    fn collect_quotes(&mut self, text: &str) {
        for (open, close) in [('"', '"'), ('“', '”'), ('`', '`')] {
            let mut rest = text;
            while let Some(start) = rest.find(open) {
                let after = &rest[start + open.len_utf8()..];
                let Some(end) = after.find(close) else { break };
                let inner = after[..end].trim().to_lowercase();
                if !inner.is_empty() {
                    self.literals.insert(inner);
                }
                rest = &after[end + close.len_utf8()..];
            }
        }
    }

    /// Splits into tokens, recording code-like chunks as literals and letters glued to digits
    /// (`python3`, `IPv6`) as entities.
    fn tokenize(&mut self, text: &str) -> Vec<Tok> {
        let mut toks = Vec::new();
        for line in text.lines() {
            // A line break starts a new sentence even without punctuation.
            let mut sentence_start = true;
            for raw in line.split_whitespace() {
                let chunk = raw.trim_matches(|c: char| {
                    matches!(
                        c,
                        '"' | '\''
                            | '('
                            | ')'
                            | '['
                            | ']'
                            | '{'
                            | '}'
                            | '“'
                            | '”'
                            | '‘'
                            | '’'
                            | '`'
                            | ','
                            | ';'
                            | '¿'
                            | '¡'
                    )
                });
                let chunk = chunk.trim_end_matches(['.', '!', '?', ':']);
                let ends_sentence = raw
                    .trim_end_matches(['"', '\'', ')', '”', '’', '`'])
                    .ends_with(['.', '!', '?', ':']);
                if !chunk.is_empty() {
                    if is_code_like(chunk) {
                        self.literals.insert(chunk.to_lowercase());
                        // Still index the pieces so that "os.path" on one side finds "os" and
                        // "path" as words on the other, but without entity status.
                        for piece in chunk.split(|c: char| !c.is_alphanumeric()) {
                            if !piece.is_empty() {
                                self.words.insert(piece.to_lowercase());
                            }
                        }
                    } else {
                        self.split_chunk(chunk, sentence_start, &mut toks);
                    }
                }
                sentence_start = ends_sentence;
            }
        }
        toks
    }

    /// Splits a whitespace-free chunk into letter runs, number runs and symbols.
    fn split_chunk(&mut self, chunk: &str, sentence_start: bool, toks: &mut Vec<Tok>) {
        #[derive(PartialEq)]
        enum Run {
            Letters(String),
            Digits(String),
            Sym(char),
        }
        let chars: Vec<char> = chunk.chars().collect();
        let mut runs: Vec<Run> = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_alphabetic() {
                let mut s = String::new();
                // Apostrophes inside words keep contractions ("don't") and possessives whole.
                while i < chars.len()
                    && (chars[i].is_alphabetic()
                        || (matches!(chars[i], '\'' | '’')
                            && chars.get(i + 1).is_some_and(|n| n.is_alphabetic())))
                {
                    s.push(chars[i]);
                    i += 1;
                }
                runs.push(Run::Letters(s));
            } else if c.is_ascii_digit() {
                let mut s = String::new();
                // Decimal points and thousands separators only count between digits.
                while i < chars.len()
                    && (chars[i].is_ascii_digit()
                        || (matches!(chars[i], '.' | ',')
                            && chars.get(i + 1).is_some_and(char::is_ascii_digit)))
                {
                    s.push(chars[i]);
                    i += 1;
                }
                runs.push(Run::Digits(s));
            } else {
                runs.push(Run::Sym(c));
                i += 1;
            }
        }

        let has_digits = runs.iter().any(|r| matches!(r, Run::Digits(_)));
        let mut prefix: Option<char> = None;
        let mut first = true;
        for (idx, run) in runs.iter().enumerate() {
            match run {
                Run::Digits(d) => {
                    let mut canon = canonical_number(d);
                    if let Some(p) = prefix.take() {
                        canon.insert(0, p);
                    }
                    toks.push(Tok::Num(canon));
                }
                Run::Letters(l) => {
                    let lower = l.to_lowercase();
                    let after_digits = idx > 0 && matches!(runs[idx - 1], Run::Digits(_));
                    let glued_suffix = after_digits
                        && (is_ordinal_suffix(&lower)
                            || unit(&lower).is_some()
                            || lower == "s"
                            || lower == "k");
                    if has_digits && !glued_suffix {
                        // Letters glued to digits form an identifier ("python3", "IPv6",
                        // "gpt4"): the letter part is an entity, the digits a number.
                        self.entities.insert(strip_possessive(&lower).to_string());
                    }
                    toks.push(Tok::Word {
                        orig: l.clone(),
                        lower,
                        sentence_start: sentence_start && first,
                    });
                }
                Run::Sym(c) => {
                    // A sign or currency glued to the following digits belongs to the number,
                    // unless it sits between two numbers ("2-3" is a subtraction).
                    // Only at the start of the chunk: in "COVID-19" the dash is a hyphen.
                    let next_is_digits = matches!(runs.get(idx + 1), Some(Run::Digits(_)));
                    if idx == 0
                        && next_is_digits
                        && matches!(c, '-' | '−' | '$' | '€' | '£' | '¥' | '#')
                    {
                        prefix = Some(if *c == '−' { '-' } else { *c });
                    } else {
                        toks.push(Tok::Sym(*c));
                    }
                }
            }
            first = false;
        }
    }

    /// Walks the token stream once, filling numbers, operators, negations, entities, roles,
    /// content words and antonym poles.
    fn scan(&mut self, toks: &[Tok]) {
        let mut i = 0;
        while i < toks.len() {
            match &toks[i] {
                Tok::Num(n) => {
                    let mut canon = n.clone();
                    let mut j = i + 1;
                    // Glued or spaced ordinal suffix: "3rd", "3 rd".
                    if let Some(Tok::Word { lower, .. }) = toks.get(j) {
                        if is_ordinal_suffix(lower) {
                            canon = format!("ord:{canon}");
                            j += 1;
                        } else if lower == "s" && n.len() == 4 {
                            canon.push('s'); // decade: "1990s"
                            j += 1;
                        }
                    }
                    // "3 million", "2.5k"
                    if let Some(Tok::Word { lower, .. }) = toks.get(j) {
                        if let Some(scale) = scale_word(lower) {
                            canon = scale_number(&canon, scale);
                            j += 1;
                        } else if lower == "k" {
                            canon = scale_number(&canon, 1_000);
                            j += 1;
                        }
                    }
                    j = self.attach_suffix(&mut canon, toks, j);
                    self.numbers.insert(canon);
                    i = j;
                    continue;
                }
                Tok::Sym(c) => {
                    if let Some(op) = symbol_operator(*c) {
                        if is_number_at(toks, i.wrapping_sub(1)) && is_number_at(toks, i + 1) {
                            self.operators.insert(op);
                        }
                    }
                }
                Tok::Word {
                    orig,
                    lower,
                    sentence_start,
                } => {
                    let base = strip_possessive(lower);
                    self.words.insert(base.to_string());

                    // Number words: a maximal run such as "two hundred fifty".
                    let numeric = number_word(base).is_some() || scale_word(base).is_some();
                    if numeric && !(base == "one" && is_pronoun_one(toks, i)) {
                        let (value, next) = parse_number_words(toks, i);
                        let mut canon = value.to_string();
                        let next = self.attach_suffix(&mut canon, toks, next);
                        self.numbers.insert(canon);
                        self.note_word(orig, base, *sentence_start, toks, i);
                        i = next;
                        continue;
                    }
                    if let Some(v) = ordinal_word(base) {
                        self.numbers.insert(format!("ord:{v}"));
                    }
                    if let Some(op) = word_operator(base) {
                        if is_number_at(toks, i.wrapping_sub(1)) || is_number_at(toks, i + 1) {
                            self.operators.insert(op);
                        }
                    }
                    if base == "x"
                        && is_number_at(toks, i.wrapping_sub(1))
                        && is_number_at(toks, i + 1)
                    {
                        self.operators.insert('*');
                    }
                    if is_negation(lower) {
                        self.negations += 1;
                    }
                    self.note_word(orig, base, *sentence_start, toks, i);
                }
            }
            i += 1;
        }
    }

    /// Records entity status, role, content position and antonym poles for one word.
    fn note_word(&mut self, orig: &str, base: &str, sentence_start: bool, toks: &[Tok], i: usize) {
        if is_entity(orig, base, sentence_start) {
            self.entities.insert(base.to_string());
        }
        let stem = stem(base);
        // Numbers and negations are compared on their own; leaving them out here keeps
        // "can't" vs "cannot" from looking like a substitution.
        let function_word = STOPWORDS.contains(&base) || is_negation(base);
        if !function_word && number_word(base).is_none() && scale_word(base).is_none() {
            self.content.push(stem.clone());
        }
        if let Some(marker) = role_marker(toks, i) {
            self.roles.entry(stem.clone()).or_default().insert(marker);
        }
        self.stems.insert(stem);
        for (group, (pole0, pole1)) in ANTONYMS.iter().enumerate() {
            if pole0.contains(&base) {
                self.poles.entry(group).or_default().insert(0);
            }
            if pole1.contains(&base) {
                self.poles.entry(group).or_default().insert(1);
            }
        }
        let after_phrasal_verb = i > 0
            && matches!(&toks[i - 1], Tok::Word { lower, .. } if PHRASAL_VERBS.contains(&lower.as_str()));
        if after_phrasal_verb {
            for (k, (pole0, pole1)) in PARTICLES.iter().enumerate() {
                let group = ANTONYMS.len() + k;
                if pole0.contains(&base) {
                    self.poles.entry(group).or_default().insert(0);
                }
                if pole1.contains(&base) {
                    self.poles.entry(group).or_default().insert(1);
                }
            }
        }
    }

    /// Appends a percent sign or unit that follows a number, returning the next index.
    fn attach_suffix(&mut self, canon: &mut String, toks: &[Tok], j: usize) -> usize {
        match toks.get(j) {
            Some(Tok::Sym('%')) => {
                canon.push('%');
                j + 1
            }
            Some(Tok::Word { lower, .. }) if lower == "percent" => {
                canon.push('%');
                j + 1
            }
            Some(Tok::Word { lower, .. })
                if lower == "per"
                    && matches!(toks.get(j + 1), Some(Tok::Word { lower: c, .. }) if c == "cent") =>
            {
                canon.push('%');
                j + 2
            }
            Some(Tok::Word { lower, .. }) => {
                if let Some(u) = unit(lower) {
                    canon.push(' ');
                    canon.push_str(u);
                    self.words.insert(lower.clone());
                    self.stems.insert(stem(lower));
                    j + 1
                } else {
                    j
                }
            }
            _ => j,
        }
    }

    /// Every entity and literal of `self` occurs in `other` (case-insensitively).
    fn entities_occur_in(&self, other: &Self) -> bool {
        self.entities.iter().all(|e| other.words.contains(e))
            && self
                .literals
                .iter()
                .all(|l| other.lower.contains(l.as_str()))
    }
}

/// No role marker moved from one shared word to another. In "convert Celsius *to*
/// Fahrenheit" vs "convert Fahrenheit *to* Celsius" the marker `to` leaves "fahrenheit" and
/// lands on "celsius": a swap of source and target. A word merely gaining or losing a role
/// ("visit Japan" vs "travel to Japan", "center a div in CSS" vs "the CSS to center a div")
/// is rewording and passes.
fn roles_agree(a: &Features, b: &Features) -> bool {
    let empty = BTreeSet::new();
    let shared = |w: &String| a.stems.contains(w) && b.stems.contains(w);
    let role = |f: &Features, w: &String| f.roles.get(w).unwrap_or(&empty).clone();
    !ROLE_MARKERS.iter().any(|m| {
        // Shared words that carry marker `m` on exactly one side, split by side.
        let only_in = |x: &Features, y: &Features| {
            x.roles
                .iter()
                .filter(|(w, ms)| shared(w) && ms.contains(m) && !role(y, w).contains(m))
                .count()
        };
        only_in(a, b) > 0 && only_in(b, a) > 0
    })
}

/// The content sequences are identical except for one word replaced by an unrelated one:
/// "stay in the fridge" vs "stay in the freezer", "sort by value" vs "sort by key". Such
/// minimal pairs score 0.9+ and are the commonest remaining false hit once numbers, entities,
/// negation and antonyms are checked. The price is that a one-word synonym swap ("tallest"
/// vs "highest") is treated as a different question, which costs an upstream call, not a
/// wrong answer.
fn single_substitution(a: &[String], b: &[String]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diffs = a.iter().zip(b).filter(|(x, y)| x != y);
    match (diffs.next(), diffs.next()) {
        (Some((x, y)), None) => !same_root(x, y),
        _ => false,
    }
}

/// Inflections or derivations of one root: one word is a prefix of the other ("drain" /
/// "draining"), or they share at least six leading letters ("discovered" / "discoverer").
fn same_root(x: &str, y: &str) -> bool {
    let common = x.chars().zip(y.chars()).take_while(|(p, q)| p == q).count();
    let prefix = common == x.chars().count() || common == y.chars().count();
    (common >= 4 && prefix) || common >= 6
}

/// No antonym group is used by both texts with different poles.
fn antonyms_agree(a: &Features, b: &Features) -> bool {
    a.poles
        .iter()
        .all(|(group, poles)| b.poles.get(group).is_none_or(|other| other == poles))
}

// === Helpers ===

fn is_entity(orig: &str, base: &str, sentence_start: bool) -> bool {
    let mut chars = orig.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let letters = orig.chars().filter(|c| c.is_alphabetic()).count();
    let upper = orig.chars().filter(|c| c.is_uppercase()).count();
    // "I", "I'm", "I've": capitalised by convention, never a name. Number words are numbers.
    if base == "i" || base.starts_with("i'") || base.starts_with("i’") {
        return false;
    }
    if number_word(base).is_some() || scale_word(base).is_some() || ordinal_word(base).is_some() {
        return false;
    }
    // Acronyms ("USD", "API") and inner capitals ("iPhone", "JavaScript") are names anywhere.
    if letters >= 2 && (upper == letters || chars.any(char::is_uppercase)) {
        return true;
    }
    if !first.is_uppercase() {
        return false;
    }
    if sentence_start {
        // Capitalised because it starts the sentence: a name only if it is not a common word.
        let plain: String = base.chars().filter(|c| c.is_alphabetic()).collect();
        return !COMMON_OPENERS.contains(&plain.as_str()) && !is_negation(base);
    }
    true
}

/// The role marker before word `i`, skipping determiners ("to *a* string" -> "to").
fn role_marker(toks: &[Tok], i: usize) -> Option<&'static str> {
    let mut k = i;
    while k > 0 {
        k -= 1;
        let Tok::Word { lower, .. } = &toks[k] else {
            return None;
        };
        if DETERMINERS.contains(&lower.as_str()) {
            continue;
        }
        return ROLE_MARKERS.iter().find(|m| **m == lower.as_str()).copied();
    }
    None
}

/// Crude plural folding so "teaspoons" and "teaspoon" compare equal.
fn stem(lower: &str) -> String {
    let base = strip_possessive(lower);
    let n = base.chars().count();
    if n > 4 && base.ends_with("ies") {
        format!("{}y", &base[..base.len() - 3])
    } else if n > 3
        && base.ends_with('s')
        && !base.ends_with("ss")
        && !base.ends_with("us")
        && !base.ends_with("is")
    {
        base[..base.len() - 1].to_string()
    } else {
        base.to_string()
    }
}

fn is_code_like(chunk: &str) -> bool {
    // Abbreviations such as "e.g", "i.e", "U.S" are dotted single letters, not code.
    if chunk.split('.').all(|seg| seg.chars().count() <= 1) {
        return false;
    }
    let bytes: Vec<char> = chunk.chars().collect();
    let between_alnum = |sep: char| {
        bytes.windows(3).any(|w| {
            w[1] == sep
                && w[0].is_alphanumeric()
                && w[2].is_alphanumeric()
                && (w[0].is_alphabetic() || w[2].is_alphabetic())
        })
    };
    chunk.contains("://")
        || chunk.starts_with("www.")
        || chunk.contains("::")
        || chunk.contains("()")
        || chunk.contains("->")
        || chunk.contains('=')
        || (chunk.contains('_') && chunk.chars().any(char::is_alphanumeric))
        || between_alnum('.')
        || between_alnum('/')
        || (chunk.starts_with('/') && chunk.len() > 1)
        || (chunk.starts_with("--") && chunk.len() > 2)
}

fn is_ordinal_suffix(s: &str) -> bool {
    matches!(s, "st" | "nd" | "rd" | "th")
}

fn is_negation(lower: &str) -> bool {
    NEGATIONS.contains(&lower) || lower.ends_with("n't") || lower.ends_with("n’t")
}

fn strip_possessive(lower: &str) -> &str {
    lower
        .strip_suffix("'s")
        .or_else(|| lower.strip_suffix("’s"))
        .unwrap_or(lower)
}

fn unit(lower: &str) -> Option<&'static str> {
    UNITS.iter().find(|(w, _)| *w == lower).map(|(_, c)| *c)
}

fn number_word(lower: &str) -> Option<u64> {
    NUMBER_WORDS
        .iter()
        .find(|(w, _)| *w == lower)
        .map(|(_, v)| *v)
}

fn scale_word(lower: &str) -> Option<u64> {
    SCALE_WORDS
        .iter()
        .find(|(w, _)| *w == lower)
        .map(|(_, v)| *v)
}

fn ordinal_word(lower: &str) -> Option<u64> {
    ORDINAL_WORDS
        .iter()
        .find(|(w, _)| *w == lower)
        .map(|(_, v)| *v)
}

fn symbol_operator(c: char) -> Option<char> {
    match c {
        '+' => Some('+'),
        '-' | '−' | '–' => Some('-'),
        '*' | '×' | '·' => Some('*'),
        '/' | '÷' => Some('/'),
        '^' => Some('^'),
        '=' => Some('='),
        _ => None,
    }
}

fn word_operator(lower: &str) -> Option<char> {
    match lower {
        // Only unambiguous operator words: "add 2 cups" or "people over 65" are not sums or
        // divisions, and a spurious operator would block a legitimate paraphrase.
        "plus" => Some('+'),
        "minus" => Some('-'),
        "times" | "multiplied" => Some('*'),
        "divided" => Some('/'),
        "power" | "squared" | "cubed" => Some('^'),
        _ => None,
    }
}

fn is_number_at(toks: &[Tok], i: usize) -> bool {
    match toks.get(i) {
        Some(Tok::Num(_)) => true,
        Some(Tok::Word { lower, .. }) => number_word(lower).is_some(),
        _ => false,
    }
}

/// "one" is a pronoun in "which one", "this one", "the one", "one of" and "one another".
fn is_pronoun_one(toks: &[Tok], i: usize) -> bool {
    let word = |k: usize| match toks.get(k) {
        Some(Tok::Word { lower, .. }) => Some(lower.as_str()),
        _ => None,
    };
    let prev = i.checked_sub(1).and_then(word);
    let next = word(i + 1);
    matches!(
        prev,
        Some(
            "which"
                | "this"
                | "that"
                | "the"
                | "any"
                | "each"
                | "every"
                | "another"
                | "a"
                | "an"
                | "no"
                | "some"
                | "only"
                | "right"
                | "wrong"
                | "better"
                | "best"
                | "new"
                | "old"
                | "good"
                | "other"
        )
    ) || matches!(next, Some("of" | "another" | "way"))
}

/// Parses a run of number words starting at `i` ("two hundred fifty thousand") into a value
/// and the index after the run.
fn parse_number_words(toks: &[Tok], start: usize) -> (u64, usize) {
    let mut total: u64 = 0;
    let mut current: u64 = 0;
    let mut i = start;
    while let Some(Tok::Word { lower, .. }) = toks.get(i) {
        if let Some(v) = number_word(lower) {
            current = current.saturating_add(v);
        } else if let Some(scale) = scale_word(lower) {
            current = current.max(1).saturating_mul(scale);
            if scale >= 1_000 {
                total = total.saturating_add(current);
                current = 0;
            }
        } else if lower == "and"
            && i > start
            && matches!(toks.get(i + 1), Some(Tok::Word { lower: n, .. }) if number_word(n).is_some())
        {
            // "one hundred and five"
        } else {
            break;
        }
        i += 1;
    }
    (total.saturating_add(current), i)
}

/// Canonical decimal form: thousands separators dropped, trailing fractional zeros and
/// leading zeros removed ("1,000.50" -> "1000.5", "007" -> "7").
fn canonical_number(digits: &str) -> String {
    // A comma followed by exactly three digits is a thousands separator; any other comma is a
    // decimal comma ("2,5").
    let mut s = String::with_capacity(digits.len());
    let parts: Vec<&str> = digits.split(',').collect();
    let thousands = parts.len() > 1
        && parts[1..]
            .iter()
            .all(|p| p.len() >= 3 && p.as_bytes()[..3].iter().all(u8::is_ascii_digit));
    for (k, p) in parts.iter().enumerate() {
        if k > 0 && !thousands {
            s.push('.');
        }
        s.push_str(p);
    }
    // Version-like strings ("3.11.2") have several dots: keep them verbatim.
    if s.matches('.').count() > 1 {
        return s;
    }
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    }
}

/// Multiplies a canonical number by a scale word, keeping it canonical ("2.5" x 1000 -> "2500").
fn scale_number(canon: &str, scale: u64) -> String {
    match canon.parse::<f64>() {
        #[expect(
            clippy::cast_precision_loss,
            reason = "scales are at most 1e12, exact in f64"
        )]
        Ok(v) => canonical_number(&format!("{}", v * scale as f64)),
        Err(_) => format!("{canon}e{scale}"),
    }
}

#[cfg(test)]
mod tests;
