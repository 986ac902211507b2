//! The pprof `Profile` message (`perftools.profiles`, profile.proto) and
//! its building from sampled call stacks.
//!
//! Only the fields a CPU profile fills are modelled; their numbers are the
//! wire contract `go tool pprof` and Pyroscope read. Strings live once in
//! the string table (index 0 is the empty string, as the format requires)
//! and functions and locations once each, referred to by id.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// A profile as profile.proto defines it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
}

/// A value's kind and unit, as string table indexes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// One call stack (leaf first) and its values, one per sample type.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// A sample's label; `str` is a string table index.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
}

/// The binary the code was in. Saying its functions are resolved keeps
/// readers from looking for the binary to symbolize addresses.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// A frame: its lines, innermost inlined function first.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

/// A line of a function.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

/// A function; names and file are string table indexes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
}

/// One frame of a sampled stack: its symbols, innermost inlined first.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FrameSymbol {
    /// Demangled name.
    pub name: String,
    /// Name as the binary has it.
    pub system_name: String,
    pub file: String,
    pub line: u32,
}

/// A sampled stack, leaf frame first, seen `count` times on `thread`.
#[derive(Clone, Debug)]
pub struct StackCount {
    pub frames: Vec<Vec<FrameSymbol>>,
    pub thread: String,
    pub count: i64,
}

/// Builds a CPU [`Profile`] as Go's runtime writes one: sample types
/// `samples/count` and `cpu/nanoseconds`, period in CPU nanoseconds.
pub struct ProfileBuilder {
    profile: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(i64, i64, i64), u64>,
    locations: HashMap<Vec<(u64, i64)>, u64>,
}

impl ProfileBuilder {
    /// A profile of `binary` sampled at `frequency` Hz from `start` for
    /// `duration`.
    pub fn new(
        frequency: u32,
        start: SystemTime,
        duration: Duration,
        binary: &str,
    ) -> ProfileBuilder {
        let mut builder = ProfileBuilder {
            profile: Profile::default(),
            strings: HashMap::new(),
            functions: HashMap::new(),
            locations: HashMap::new(),
        };
        builder.string("");
        let samples = builder.value_type("samples", "count");
        let cpu = builder.value_type("cpu", "nanoseconds");
        builder.profile.sample_type = vec![samples, cpu.clone()];
        builder.profile.period_type = Some(cpu);
        builder.profile.period = 1_000_000_000 / i64::from(frequency.max(1));
        let since_epoch = start.duration_since(SystemTime::UNIX_EPOCH);
        builder.profile.time_nanos = since_epoch.map_or(0, nanos);
        builder.profile.duration_nanos = nanos(duration);
        let filename = builder.string(binary);
        builder.profile.mapping = vec![Mapping {
            id: MAPPING_ID,
            filename,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        }];
        builder
    }

    /// Adds one sampled stack.
    pub fn add(&mut self, stack: &StackCount) {
        let location_id = stack
            .frames
            .iter()
            .map(|symbols| self.location(symbols))
            .collect();
        let thread_key = self.string("thread");
        let thread = self.string(&stack.thread);
        self.profile.sample.push(Sample {
            location_id,
            value: vec![stack.count, stack.count.saturating_mul(self.profile.period)],
            label: vec![Label {
                key: thread_key,
                str: thread,
            }],
        });
    }

    pub fn finish(self) -> Profile {
        self.profile
    }

    fn value_type(&mut self, kind: &str, unit: &str) -> ValueType {
        ValueType {
            r#type: self.string(kind),
            unit: self.string(unit),
        }
    }

    fn string(&mut self, text: &str) -> i64 {
        if let Some(&index) = self.strings.get(text) {
            return index;
        }
        let index = self.profile.string_table.len() as i64;
        self.profile.string_table.push(text.to_owned());
        self.strings.insert(text.to_owned(), index);
        index
    }

    fn function(&mut self, symbol: &FrameSymbol) -> u64 {
        let key = (
            self.string(&symbol.name),
            self.string(&symbol.system_name),
            self.string(&symbol.file),
        );
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        // Ids start at 1: 0 means "none" in profile.proto.
        let id = self.profile.function.len() as u64 + 1;
        self.profile.function.push(Function {
            id,
            name: key.0,
            system_name: key.1,
            filename: key.2,
        });
        self.functions.insert(key, id);
        id
    }

    /// A frame's location; a frame no symbol was found for becomes one
    /// named `unknown`, so the stack keeps its depth.
    fn location(&mut self, symbols: &[FrameSymbol]) -> u64 {
        let unknown = [FrameSymbol {
            name: "unknown".to_owned(),
            system_name: "unknown".to_owned(),
            file: String::new(),
            line: 0,
        }];
        let symbols = if symbols.is_empty() {
            &unknown
        } else {
            symbols
        };
        let lines: Vec<(u64, i64)> = symbols
            .iter()
            .map(|symbol| (self.function(symbol), i64::from(symbol.line)))
            .collect();
        if let Some(&id) = self.locations.get(&lines) {
            return id;
        }
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(Location {
            id,
            mapping_id: MAPPING_ID,
            line: lines
                .iter()
                .map(|&(function_id, line)| Line { function_id, line })
                .collect(),
        });
        self.locations.insert(lines, id);
        id
    }
}

/// Every location is in the one mapping: the sampler resolved names in
/// the process, shared libraries included.
const MAPPING_ID: u64 = 1;

fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn symbol(name: &str, line: u32) -> FrameSymbol {
        FrameSymbol {
            name: name.to_owned(),
            system_name: format!("_ZN{name}"),
            file: "src/lib.rs".to_owned(),
            line,
        }
    }

    fn builder() -> ProfileBuilder {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        ProfileBuilder::new(100, start, Duration::from_secs(2), "/usr/bin/sluice")
    }

    #[test]
    fn a_cpu_profile_is_described_as_go_describes_one() {
        let profile = builder().finish();
        let text = |index: i64| profile.string_table[index as usize].as_str();
        assert_eq!(profile.string_table[0], "");
        let types: Vec<(&str, &str)> = profile
            .sample_type
            .iter()
            .map(|value| (text(value.r#type), text(value.unit)))
            .collect();
        assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
        let period_type = profile.period_type.as_ref().unwrap();
        assert_eq!(text(period_type.r#type), "cpu");
        assert_eq!(profile.period, 10_000_000);
        assert_eq!(profile.time_nanos, 1_700_000_000_000_000_000);
        assert_eq!(profile.duration_nanos, 2_000_000_000);
        assert_eq!(text(profile.mapping[0].filename), "/usr/bin/sluice");
    }

    #[test]
    fn functions_and_locations_are_written_once_and_referred_to_by_id() {
        let mut builder = builder();
        let main = vec![symbol("main", 3)];
        let work = vec![symbol("inlined", 9), symbol("work", 5)];
        for count in [4, 6] {
            builder.add(&StackCount {
                frames: vec![work.clone(), main.clone()],
                thread: "worker".to_owned(),
                count,
            });
        }
        builder.add(&StackCount {
            frames: vec![Vec::new(), main.clone()],
            thread: "worker".to_owned(),
            count: 1,
        });
        let bytes = builder.finish().encode_to_vec();
        let profile = Profile::decode(bytes.as_slice()).unwrap();
        let text = |index: i64| profile.string_table[index as usize].as_str();
        assert_eq!(profile.function.len(), 4, "main, inlined, work, unknown");
        assert_eq!(profile.location.len(), 3);
        assert_eq!(profile.sample[0].location_id, profile.sample[1].location_id);
        assert_eq!(profile.sample[1].value, [6, 60_000_000]);
        let leaf = &profile.location[profile.sample[0].location_id[0] as usize - 1];
        let names: Vec<&str> = leaf
            .line
            .iter()
            .map(|line| text(profile.function[line.function_id as usize - 1].name))
            .collect();
        assert_eq!(names, ["inlined", "work"], "innermost inlined first");
        let label = &profile.sample[2].label[0];
        assert_eq!((text(label.key), text(label.str)), ("thread", "worker"));
        let unknown = &profile.location[profile.sample[2].location_id[0] as usize - 1];
        let function = unknown.line[0].function_id as usize - 1;
        assert_eq!(text(profile.function[function].name), "unknown");
        let unique: std::collections::HashSet<&String> = profile.string_table.iter().collect();
        assert_eq!(unique.len(), profile.string_table.len());
    }
}
