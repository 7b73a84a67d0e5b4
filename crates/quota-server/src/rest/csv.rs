//! The API key import file (`POST /apikeys?mode=import&format=csv`), as the managed service
//! documents it: a header line naming the columns in any order and any case; `Name` and
//! `Key` required; `Description`, `Enabled` (default true) and `UsagePlanIds` (several ids in
//! one quoted field, comma-separated) optional; other columns ignored. Fields may be quoted
//! with double or single quotes; a doubled quote inside stands for one.
//!
//! A row with a problem becomes a warning naming its line, never its key value.

/// Most rows in one import file.
pub const MAX_IMPORT_ROWS: usize = 10_000;

/// One key to import.
pub struct ImportRow {
    /// Line number in the file (1 is the header).
    pub line: usize,
    pub name: String,
    /// The key's value (a secret: never echoed).
    pub key: String,
    pub description: String,
    pub enabled: Option<String>,
    pub usage_plan_ids: Vec<String>,
}

/// The rows of a file and the warnings for the rows that could not be read.
pub struct ImportFile {
    pub rows: Vec<ImportRow>,
    pub warnings: Vec<String>,
}

/// Split one line into fields.
fn fields(line: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        match chars.peek().copied() {
            Some(q @ ('"' | '\'')) => {
                chars.next();
                loop {
                    match chars.next() {
                        Some(c) if c == q => {
                            if chars.peek() == Some(&q) {
                                chars.next();
                                field.push(q);
                            } else {
                                break;
                            }
                        }
                        Some(c) => field.push(c),
                        None => return Err("a quoted field is not closed"),
                    }
                }
                match chars.next() {
                    None => {
                        out.push(field);
                        return Ok(out);
                    }
                    Some(',') => out.push(field),
                    Some(_) => return Err("text after a closing quote"),
                }
            }
            _ => loop {
                match chars.next() {
                    None => {
                        out.push(field.trim().to_owned());
                        return Ok(out);
                    }
                    Some(',') => {
                        out.push(field.trim().to_owned());
                        break;
                    }
                    Some(c) => field.push(c),
                }
            },
        }
    }
}

/// Parse an import file. Errors (no header, missing columns, too many rows) refuse the file.
pub fn parse(text: &str) -> Result<ImportFile, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or("the file is empty: a header line with Name and Key columns is required")?;
    let header: Vec<String> = fields(header)
        .map_err(|e| format!("line 1: {e}"))?
        .into_iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let column = |name: &str| header.iter().position(|h| h == name);
    let (Some(name_col), Some(key_col)) = (column("name"), column("key")) else {
        return Err("the header line must name the Name and Key columns".into());
    };
    let description_col = column("description");
    let enabled_col = column("enabled");
    let plans_col = column("usageplanids");
    let mut file = ImportFile {
        rows: Vec::new(),
        warnings: Vec::new(),
    };
    for (line, text) in lines {
        if file.rows.len() + file.warnings.len() >= MAX_IMPORT_ROWS {
            return Err(format!("more than {MAX_IMPORT_ROWS} rows"));
        }
        let cells = match fields(text) {
            Ok(c) => c,
            Err(e) => {
                file.warnings.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let cell = |col: Option<usize>| col.and_then(|c| cells.get(c)).cloned();
        let name = cell(Some(name_col)).unwrap_or_default();
        let key = cell(Some(key_col)).unwrap_or_default();
        if name.is_empty() || key.is_empty() {
            file.warnings
                .push(format!("line {line}: Name and Key are required"));
            continue;
        }
        file.rows.push(ImportRow {
            line,
            name,
            key,
            description: cell(description_col).unwrap_or_default(),
            enabled: cell(enabled_col).filter(|e| !e.is_empty()),
            usage_plan_ids: cell(plans_col)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: the documented examples parse; columns in any order and case; quoted plan
    // lists with either quote. Set-up: the three documented shapes. Pass: as asserted.
    #[test]
    fn documented_examples() {
        let f = parse("Key,name\napikey1234abcdefghij0123456789,MyFirstApiKey\n").unwrap();
        assert_eq!(f.rows.len(), 1);
        assert_eq!(f.rows[0].name, "MyFirstApiKey");
        assert_eq!(f.rows[0].key, "apikey1234abcdefghij0123456789");
        let f = parse(
            "Name,key,description,Enabled,usageplanIds\r\nK1,apikey1234abcdefghij0123456789,An imported key,TRUE,c7y23b\r\n",
        )
        .unwrap();
        assert_eq!(f.rows[0].description, "An imported key");
        assert_eq!(f.rows[0].enabled.as_deref(), Some("TRUE"));
        assert_eq!(f.rows[0].usage_plan_ids, vec!["c7y23b"]);
        let f = parse(
            "Enabled,Name,key,UsageplanIds\ntrue,K,apikey1234abcdefghij0123456789,\"c7y23b,glvrsr\"\nfalse,L,apikey1234abcdefghij0123456780,'p1, p2'\n",
        )
        .unwrap();
        assert_eq!(f.rows[0].usage_plan_ids, vec!["c7y23b", "glvrsr"]);
        assert_eq!(f.rows[1].usage_plan_ids, vec!["p1", "p2"]);
        assert_eq!(f.rows[1].line, 3);
    }

    // Property: bad rows become warnings naming the line (never the key); a bad header
    // refuses the file. Set-up: files. Pass: as asserted.
    #[test]
    fn bad_input() {
        assert!(parse("").is_err());
        assert!(parse("name,description\nx,y").is_err());
        let f = parse("name,key\n,secretsecretsecretsecret\nok,\"unclosed\n").unwrap();
        assert_eq!(f.rows.len(), 0);
        assert_eq!(f.warnings.len(), 2);
        assert!(f.warnings[0].starts_with("line 2"));
        assert!(f.warnings.iter().all(|w| !w.contains("secretsecret")));
        let big: String = std::iter::once("name,key\n".to_owned())
            .chain((0..=MAX_IMPORT_ROWS).map(|i| format!("k{i},v{i}\n")))
            .collect();
        assert!(parse(&big).is_err());
    }
}
