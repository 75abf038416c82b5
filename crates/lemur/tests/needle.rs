//! Needle in a haystack through `TextIndex`: 50 documents of 2k tokens, 50
//! of 8k and 10 of 32k, of varied filler text, each hiding one distinct
//! needle at a random depth. The question for each needle must retrieve
//! its document first (recall@1 = 1.0 at every length). Single-vector
//! retrieval (`encode`, cosine) is reported for contrast.

mod common_text;

use common_text::encoder;
use lemur::text::EncodeOptions;
use lemur::{TextIndex, TextIndexConfig};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.below(words.len())]
    }
}

const SUBJECTS: [&str; 24] = [
    "the farmer",
    "an old sailor",
    "the committee",
    "a young engineer",
    "the librarian",
    "the baker",
    "a tired traveller",
    "the council",
    "the orchestra",
    "a curious child",
    "the gardener",
    "the mechanic",
    "a quiet student",
    "the museum guide",
    "the carpenter",
    "the weather service",
    "a local painter",
    "the night nurse",
    "the ferry captain",
    "the school choir",
    "a retired teacher",
    "the shepherd",
    "the postman",
    "the chemist",
];
const VERBS: [&str; 24] = [
    "repaired",
    "painted",
    "measured",
    "described",
    "carried",
    "studied",
    "cleaned",
    "photographed",
    "ordered",
    "discussed",
    "borrowed",
    "planted",
    "sorted",
    "polished",
    "examined",
    "wrapped",
    "delivered",
    "sketched",
    "counted",
    "collected",
    "folded",
    "weighed",
    "tested",
    "admired",
];
const OBJECTS: [&str; 24] = [
    "the wooden fence",
    "a basket of apples",
    "the broken clock",
    "several maps",
    "the copper kettle",
    "a pile of letters",
    "the garden hose",
    "an antique lamp",
    "the new bicycle",
    "a box of nails",
    "the stone bridge",
    "a stack of books",
    "the harbour wall",
    "the wool blankets",
    "a jar of honey",
    "the iron gate",
    "a pair of boots",
    "the village well",
    "the paper lanterns",
    "a crate of pears",
    "the glass windows",
    "the fishing nets",
    "a bundle of firewood",
    "the old piano",
];
const PLACES: [&str; 16] = [
    "near the river",
    "behind the barn",
    "on the hill",
    "at the market",
    "in the workshop",
    "by the lake",
    "under the bridge",
    "in the attic",
    "beside the station",
    "in the orchard",
    "along the coast",
    "at the edge of the forest",
    "in the courtyard",
    "on the pier",
    "inside the greenhouse",
    "at the crossroads",
];
const TIMES: [&str; 12] = [
    "early in the morning",
    "after the storm",
    "during the long winter",
    "before lunch",
    "late at night",
    "on a rainy afternoon",
    "at the end of the summer",
    "every spring",
    "in the autumn",
    "after the harvest",
    "before the festival",
    "at dawn",
];
const ADVERBS: [&str; 12] = [
    "carefully",
    "slowly",
    "with great patience",
    "without a word",
    "quickly",
    "twice",
    "once again",
    "very quietly",
    "with some help",
    "for hours",
    "happily",
    "in silence",
];

fn sentence(rng: &mut Rng) -> String {
    let (s, v, o) = (rng.pick(&SUBJECTS), rng.pick(&VERBS), rng.pick(&OBJECTS));
    let sentence = match rng.below(6) {
        0 => format!("{s} {v} {o} {}.", rng.pick(&PLACES)),
        1 => format!("{}, {s} {v} {o}.", rng.pick(&TIMES)),
        2 => format!(
            "{s} and {} {v} {o} {}.",
            rng.pick(&SUBJECTS),
            rng.pick(&ADVERBS)
        ),
        3 => format!("It is said that {s} {v} {o} {}.", rng.pick(&TIMES)),
        4 => format!("Nobody knew why {s} {v} {o} {}.", rng.pick(&PLACES)),
        _ => format!("{s} {v} {o} {}, {}.", rng.pick(&ADVERBS), rng.pick(&PLACES)),
    };
    let mut chars = sentence.chars();
    let first = chars.next().expect("non-empty").to_uppercase();
    first.chain(chars).collect()
}

const NAMES: [&str; 56] = [
    "Cindy", "Marcus", "Priya", "Olga", "Tobias", "Fatima", "Hiroshi", "Elena", "Kwame", "Ingrid",
    "Diego", "Amara", "Sven", "Lucia", "Rafael", "Yuki", "Nadia", "Boris", "Chloe", "Tariq",
    "Greta", "Mateo", "Leila", "Oscar", "Sofia", "Viktor", "Hannah", "Jamal", "Mei", "Felix",
    "Aisha", "Pedro", "Zara", "Henrik", "Noor", "Luca", "Beatrice", "Omar", "Freya", "Rohan",
    "Clara", "Dmitri", "Esther", "Kofi", "Isabel", "Anton", "Maya", "Samuel", "Vera", "Emil",
    "Rosa", "Arjun", "Lena", "Hugo", "Ruth", "Ivan",
];
const CITIES: [&str; 56] = [
    "Lisbon",
    "Nairobi",
    "Kyoto",
    "Oslo",
    "Lima",
    "Cairo",
    "Vienna",
    "Hanoi",
    "Dublin",
    "Santiago",
    "Helsinki",
    "Marrakesh",
    "Prague",
    "Auckland",
    "Havana",
    "Reykjavik",
    "Istanbul",
    "Montreal",
    "Seville",
    "Bangkok",
    "Budapest",
    "Cape Town",
    "Edinburgh",
    "Jakarta",
    "Krakow",
    "Manila",
    "Naples",
    "Porto",
    "Quito",
    "Riga",
    "Seoul",
    "Tbilisi",
    "Valencia",
    "Warsaw",
    "Zurich",
    "Athens",
    "Bogota",
    "Copenhagen",
    "Florence",
    "Geneva",
    "Kathmandu",
    "Lagos",
    "Mumbai",
    "Nice",
    "Osaka",
    "Perth",
    "Salzburg",
    "Tallinn",
    "Toronto",
    "Venice",
    "Amsterdam",
    "Barcelona",
    "Chicago",
    "Denver",
    "Glasgow",
    "Hamburg",
];
const ACTIVITIES: [&str; 8] = [
    "eat a warm pastry and watch the boats in the harbour",
    "climb the old tower at sunset",
    "take the night tram across the city",
    "swim in the cold lake before breakfast",
    "visit the flower market on Sunday",
    "listen to street musicians in the main square",
    "ride a bicycle along the river path",
    "drink coffee in the oldest cafe",
];

struct Haystack {
    id: String,
    text: String,
    query: String,
    length: usize,
}

/// A document of about `target` tokens with needle `i` at a random depth.
fn haystack(i: usize, target: usize, rng: &mut Rng) -> Haystack {
    let (needle, query) = if i.is_multiple_of(2) {
        let name = NAMES[i / 2];
        let key = 10_000 + rng.below(90_000);
        (
            format!("{name}'s pass key is {key}."),
            format!("What is {name}'s pass key?"),
        )
    } else {
        let city = CITIES[i / 2];
        let activity = ACTIVITIES[rng.below(ACTIVITIES.len())];
        (
            format!("The best thing to do in {city} is to {activity}."),
            format!("What is the best thing to do in {city}?"),
        )
    };
    let tokenizer = encoder();
    let tokenizer = tokenizer.tokenizer();
    let mut sentences = Vec::new();
    let mut tokens = tokenizer.content_ids(&needle, 0).unwrap().len() + 2;
    while tokens < target {
        let s = sentence(rng);
        tokens += tokenizer.content_ids(&s, 0).unwrap().len();
        sentences.push(s);
    }
    let depth = rng.below(sentences.len() + 1);
    sentences.insert(depth, needle);
    Haystack {
        id: format!("doc-{target}-{i}"),
        text: sentences.join(" "),
        query,
        length: target,
    }
}

#[test]
fn every_needle_is_found_first_at_every_length() {
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let mut docs = Vec::new();
    let plan = [(2_000, 50), (8_000, 50), (32_000, 10)];
    let mut i = 0;
    for (length, count) in plan {
        for _ in 0..count {
            docs.push(haystack(i, length, &mut rng));
            i += 1;
        }
    }
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let mut index = TextIndex::new(encoder(), TextIndexConfig::default()).unwrap();
    // One pass of the model gives both the token vectors for the index and
    // the single-vector embeddings for the contrast (the token-weighted
    // mean of the same windows' embeddings).
    let started = std::time::Instant::now();
    let (embeddings, token_vectors) = encoder()
        .encode_with_tokens(&texts, &EncodeOptions::default(), &index.document_options())
        .unwrap();
    let n_tokens = token_vectors.n_tokens();
    println!(
        "encoded {} documents, {n_tokens} tokens in {:.1} s",
        docs.len(),
        started.elapsed().as_secs_f64()
    );
    for (doc, count) in docs.iter().zip(token_vectors.counts()) {
        assert!(
            count >= doc.length && count < doc.length + 40,
            "{} has {count} tokens",
            doc.id
        );
    }

    let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    index.index_encoded(&ids, token_vectors, None).unwrap();
    let queries: Vec<&str> = docs.iter().map(|d| d.query.as_str()).collect();
    let hits = index.search_batch(&queries, 1).unwrap();

    // A smaller candidate list exercises the LEMUR approximation itself.
    let mut narrow = index.clone();
    narrow.set_n_candidates(10).unwrap();
    let narrow_hits = narrow.search_batch(&queries, 1).unwrap();

    let query_embeddings = encoder()
        .encode(&queries, &EncodeOptions::default())
        .unwrap();
    let mut failures = Vec::new();
    for (length, _) in plan {
        let of_length: Vec<usize> = (0..docs.len())
            .filter(|&d| docs[d].length == length)
            .collect();
        let found = |d: &usize, hits: &[Vec<(String, f32)>]| hits[*d][0].0 == docs[*d].id;
        let multi = of_length.iter().filter(|d| found(d, &hits)).count();
        let multi_narrow = of_length.iter().filter(|d| found(d, &narrow_hits)).count();
        let single = of_length
            .iter()
            .filter(|&&d| {
                let q = query_embeddings.row(d);
                let scores: Vec<f32> = (0..docs.len())
                    .map(|j| q.iter().zip(embeddings.row(j)).map(|(a, b)| a * b).sum())
                    .collect();
                let best = (0..docs.len())
                    .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
                    .unwrap();
                best == d
            })
            .count();
        let n = of_length.len() as f64;
        println!(
            "{length:>6} tokens: recall@1 multi-vector (k'=200) {:.3}, (k'=10) {:.3}, single-vector {:.3}",
            multi as f64 / n,
            multi_narrow as f64 / n,
            single as f64 / n
        );
        for &d in &of_length {
            if !found(&d, &hits) {
                failures.push(format!(
                    "{:?} -> {:?} (wanted {})",
                    docs[d].query, hits[d][0], docs[d].id
                ));
            }
        }
    }
    assert!(failures.is_empty(), "needles missed: {failures:#?}");
}
