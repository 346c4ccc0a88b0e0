//! Kubernetes label selectors (`app=web,tier!=db,env in (a,b),!x`): the
//! syntax of apimachinery's `labels.Parse`, its matching rules and its
//! error texts, so a List or Watch refuses a bad selector with the words
//! kube-apiserver uses.
//!
//! Grammar: requirements separated by `,`; each is `[!]KEY` alone (exists /
//! does not exist) or `KEY OP VALUE` with `=`, `==`, `!=`, `>`, `<`, or
//! `KEY in|notin (V1,V2,...)`. Keys are qualified names, values label
//! values ([`crate::names`]). This module only parses and matches; it must
//! never decide who may read an object.

use std::collections::{BTreeSet, HashMap};

use crate::names::{is_qualified_name, label_value_errors};

/// How a requirement compares a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Exists,
    DoesNotExist,
    Equals,
    NotEquals,
    In,
    NotIn,
    GreaterThan,
    LessThan,
}

/// One requirement on one label key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
    /// Sorted and de-duplicated, as apimachinery keeps them.
    values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &HashMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        let listed = |v: &String| self.values.iter().any(|x| x == v);
        match self.op {
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::Equals | Op::In => value.is_some_and(listed),
            Op::NotEquals | Op::NotIn => !value.is_some_and(listed),
            Op::GreaterThan | Op::LessThan => {
                let Some(Ok(have)) = value.map(|v| v.parse::<i64>()) else {
                    return false;
                };
                let Some(Ok(want)) = self.values.first().map(|v| v.parse::<i64>()) else {
                    return false;
                };
                if self.op == Op::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

/// A parsed selector: every requirement must match. The empty selector
/// matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Parse a selector; the error is apimachinery's text for it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut p = Parser {
            items: lex(s),
            pos: 0,
        };
        let mut requirements = p.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements })
    }

    /// Whether the selector selects nothing out (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: &HashMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    End,
    OpenPar,
    ClosePar,
    Comma,
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    In,
    NotIn,
    Ident,
}

fn symbol(s: &str) -> Option<Tok> {
    Some(match s {
        "(" => Tok::OpenPar,
        ")" => Tok::ClosePar,
        "," => Tok::Comma,
        "!" => Tok::Not,
        "=" => Tok::Equals,
        "==" => Tok::DoubleEquals,
        "!=" => Tok::NotEquals,
        ">" => Tok::GreaterThan,
        "<" => Tok::LessThan,
        "in" => Tok::In,
        "notin" => Tok::NotIn,
        _ => return None,
    })
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// The tokens of `s`, ending with [`Tok::End`]. Operators are the longest
/// run of special characters that still names one.
fn lex(s: &str) -> Vec<(Tok, String)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        if i >= b.len() {
            out.push((Tok::End, String::new()));
            return out;
        }
        let start = i;
        if is_special(b[i]) {
            let mut best = None;
            while i < b.len() && is_special(b[i]) {
                match symbol(&s[start..=i]) {
                    Some(t) => best = Some((t, i + 1)),
                    None if best.is_some() => break,
                    None => {}
                }
                i += 1;
            }
            // Every single special character names a token, so `best` is set.
            let (tok, end) = best.unwrap_or((Tok::Ident, i));
            i = end;
            out.push((tok, s[start..end].to_string()));
        } else {
            while i < b.len() && !is_special(b[i]) && !is_space(b[i]) {
                i += 1;
            }
            let word = &s[start..i];
            let tok = match symbol(word) {
                Some(t @ (Tok::In | Tok::NotIn)) => t,
                _ => Tok::Ident,
            };
            out.push((tok, word.to_string()));
        }
    }
}

/// Where a token is read: among values `in` and `notin` are plain words.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<(Tok, String)>,
    pos: usize,
}

impl Parser {
    fn peek(&self, ctx: Ctx) -> (Tok, String) {
        let (t, l) = self.items[self.pos.min(self.items.len() - 1)].clone();
        (Self::in_ctx(t, ctx), l)
    }

    fn next(&mut self, ctx: Ctx) -> (Tok, String) {
        let item = self.peek(ctx);
        self.pos = (self.pos + 1).min(self.items.len() - 1);
        item
    }

    fn in_ctx(t: Tok, ctx: Ctx) -> Tok {
        match (t, ctx) {
            (Tok::In | Tok::NotIn, Ctx::Values) => Tok::Ident,
            _ => t,
        }
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut out = Vec::new();
        loop {
            let (tok, lit) = self.peek(Ctx::Values);
            match tok {
                Tok::Ident | Tok::Not => {
                    let r = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    out.push(r);
                    let (t, l) = self.next(Ctx::Values);
                    match t {
                        Tok::End => return Ok(out),
                        Tok::Comma => {
                            let (t2, l2) = self.peek(Ctx::Values);
                            if t2 != Tok::Ident && t2 != Tok::Not {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => {
                            return Err(format!("found '{l}', expected: ',' or 'end of string'"));
                        }
                    }
                }
                Tok::End => return Ok(out),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let (key, op) = self.key_and_inferred_op()?;
        let op = match op {
            Some(op @ (Op::Exists | Op::DoesNotExist)) => {
                return Ok(Requirement {
                    key,
                    op,
                    values: Vec::new(),
                });
            }
            _ => self.operator()?,
        };
        let values: BTreeSet<String> = match op {
            Op::In | Op::NotIn => self.values()?,
            _ => self.exact_value()?,
        };
        let values: Vec<String> = values.into_iter().collect();
        let mut errs = Vec::new();
        if matches!(op, Op::GreaterThan | Op::LessThan) {
            for (i, v) in values.iter().enumerate() {
                if v.parse::<i64>().is_err() {
                    errs.push(format!(
                        "values[{i}]: Invalid value: {v:?}: for 'Gt', 'Lt' operators, the value must be an integer"
                    ));
                }
            }
        }
        for (i, v) in values.iter().enumerate() {
            let bad = label_value_errors(v);
            if !bad.is_empty() {
                errs.push(format!(
                    "values[{i}][{key}]: Invalid value: {v:?}: {}",
                    bad.join("; ")
                ));
            }
        }
        match errs.len() {
            0 => Ok(Requirement { key, op, values }),
            1 => Err(errs.remove(0)),
            _ => Err(format!("[{}]", errs.join(", "))),
        }
    }

    fn key_and_inferred_op(&mut self) -> Result<(String, Option<Op>), String> {
        let mut op = None;
        let (mut tok, mut lit) = self.next(Ctx::Values);
        if tok == Tok::Not {
            op = Some(Op::DoesNotExist);
            (tok, lit) = self.next(Ctx::Values);
        }
        if tok != Tok::Ident {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        let bad = is_qualified_name(&lit);
        if !bad.is_empty() {
            return Err(format!("<nil>: Invalid value: {lit:?}: {}", bad.join("; ")));
        }
        let (next, _) = self.peek(Ctx::Values);
        if matches!(next, Tok::End | Tok::Comma) && op.is_none() {
            op = Some(Op::Exists);
        }
        Ok((lit, op))
    }

    fn operator(&mut self) -> Result<Op, String> {
        let (tok, lit) = self.next(Ctx::KeyAndOperator);
        Ok(match tok {
            Tok::In => Op::In,
            Tok::NotIn => Op::NotIn,
            Tok::Equals | Tok::DoubleEquals => Op::Equals,
            Tok::NotEquals => Op::NotEquals,
            Tok::GreaterThan => Op::GreaterThan,
            Tok::LessThan => Op::LessThan,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        })
    }

    fn values(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, lit) = self.next(Ctx::Values);
        if tok != Tok::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.peek(Ctx::Values);
        match tok {
            Tok::Ident | Tok::Comma => {
                let set = self.identifiers()?;
                if self.next(Ctx::Values).0 != Tok::ClosePar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(set)
            }
            Tok::ClosePar => {
                self.next(Ctx::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn identifiers(&mut self) -> Result<BTreeSet<String>, String> {
        let mut set = BTreeSet::new();
        loop {
            let (tok, lit) = self.next(Ctx::Values);
            match tok {
                Tok::Ident => {
                    set.insert(lit);
                    let (t2, l2) = self.peek(Ctx::Values);
                    match t2 {
                        Tok::Comma => continue,
                        Tok::ClosePar => return Ok(set),
                        _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    match self.peek(Ctx::Values).0 {
                        Tok::ClosePar => {
                            set.insert(String::new());
                            return Ok(set);
                        }
                        Tok::Comma => {
                            set.insert(String::new());
                        }
                        _ => {}
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        if matches!(self.peek(Ctx::Values).0, Tok::End | Tok::Comma) {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (tok, lit) = self.next(Ctx::Values);
        if tok == Tok::Ident {
            return Ok(BTreeSet::from([lit]));
        }
        Err(format!("found '{lit}', expected: identifier"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn empty_selects_everything() {
        assert!(sel("").is_empty());
        assert!(sel("  ").matches(&labels(&[])));
    }

    #[test]
    fn equality_and_inequality() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db")]);
        for s in ["app=web", "app==web", "app = web"] {
            assert!(sel(s).matches(&web), "{s}");
            assert!(!sel(s).matches(&db), "{s}");
        }
        assert!(sel("app!=web").matches(&db));
        assert!(!sel("app!=web").matches(&web));
        // A missing key is "not equal".
        assert!(sel("tier!=front").matches(&db));
        assert!(sel("app=web,tier=front").matches(&web));
        assert!(!sel("app=web,tier=back").matches(&web));
        // `k=` selects an empty value.
        assert!(sel("app=").matches(&labels(&[("app", "")])));
    }

    #[test]
    fn sets_and_existence() {
        let a = labels(&[("env", "a")]);
        let c = labels(&[("env", "c")]);
        let none = labels(&[]);
        let s = sel("env in (a, b)");
        assert!(s.matches(&a) && !s.matches(&c) && !s.matches(&none));
        let s = sel("env notin (a,b)");
        assert!(!s.matches(&a) && s.matches(&c) && s.matches(&none));
        assert!(sel("env").matches(&a) && !sel("env").matches(&none));
        assert!(!sel("!env").matches(&a) && sel("!env").matches(&none));
        // `in` and `notin` are plain values inside the parentheses.
        assert!(sel("x in (in,notin)").matches(&labels(&[("x", "notin")])));
        assert!(sel("n>3").matches(&labels(&[("n", "4")])));
        assert!(!sel("n<3").matches(&labels(&[("n", "4")])));
        assert!(sel("example.com/role=admin").matches(&labels(&[("example.com/role", "admin")])));
    }

    #[test]
    fn kubernetes_error_texts() {
        let err = |s: &str| Selector::parse(s).expect_err(s);
        assert_eq!(err("app=web,"), "found '', expected: identifier after ','");
        assert_eq!(
            err("env in a"),
            "unable to parse requirement: found 'a' expected: '('"
        );
        assert_eq!(
            err("app web"),
            "unable to parse requirement: found 'web', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            err("=x"),
            "found '=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            err("!app=web"),
            "found '=', expected: ',' or 'end of string'"
        );
        assert_eq!(
            err("a b=c"),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            err("-bad=x"),
            "unable to parse requirement: <nil>: Invalid value: \"-bad\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
        assert_eq!(
            err("app=-x"),
            "unable to parse requirement: values[0][app]: Invalid value: \"-x\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        assert_eq!(
            err("n>x"),
            "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
        assert_eq!(
            err("env in (a b)"),
            "unable to parse requirement: found 'b', expected: ',' or ')'"
        );
    }
}
