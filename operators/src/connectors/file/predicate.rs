//! SQL predicates over records, evaluated by DataFusion on Arrow batches:
//! `FileSource::filter("value > 10 AND key <> 3")`.
//!
//! The predicate is parsed and planned against the record type's schema when
//! the job is built, so an unknown column or a non-boolean expression fails
//! before anything runs. A row for which it is NULL (a null field) is
//! dropped, as in SQL's `WHERE`.

use std::sync::Arc;

use arrow_array::{Array, BooleanArray};
use arrow_schema::{DataType, FieldRef, Schema};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use serde::Serialize;
use tideline_engine::{Error, Record, Result};

/// A compiled predicate.
pub(crate) struct Predicate {
    sql: String,
    fields: Vec<FieldRef>,
    expr: Arc<dyn PhysicalExpr>,
}

impl std::fmt::Debug for Predicate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Predicate({:?})", self.sql)
    }
}

fn invalid(sql: &str, reason: impl std::fmt::Display) -> Error {
    Error::config("file_source.predicate", format!("'{sql}': {reason}"))
}

impl Predicate {
    /// Plans `sql` over records with `fields`.
    pub(crate) fn compile(sql: &str, fields: Vec<FieldRef>) -> Result<Self> {
        if fields.is_empty() {
            return Err(invalid(sql, "the record type's fields could not be traced"));
        }
        let schema = Schema::new(fields.clone());
        let df_schema = DFSchema::try_from(schema.clone()).map_err(|e| invalid(sql, e))?;
        let ctx = SessionContext::new();
        let expr = ctx
            .parse_sql_expr(sql, &df_schema)
            .map_err(|e| invalid(sql, e))?;
        let expr = ctx
            .create_physical_expr(expr, &df_schema)
            .map_err(|e| invalid(sql, e))?;
        match expr.data_type(&schema).map_err(|e| invalid(sql, e))? {
            DataType::Boolean => {}
            other => return Err(invalid(sql, format!("is {other}, not a boolean condition"))),
        }
        Ok(Self {
            sql: sql.to_string(),
            fields,
            expr,
        })
    }

    /// The records for which the predicate is true, in order.
    pub(crate) fn retain<T: Serialize>(&self, records: Vec<Record<T>>) -> Result<Vec<Record<T>>> {
        if records.is_empty() {
            return Ok(records);
        }
        let values: Vec<&T> = records.iter().map(|r| &r.value).collect();
        let failed = |e: &dyn std::fmt::Display| {
            Error::user(format!("evaluating predicate '{}': {e}", self.sql))
        };
        let batch = serde_arrow::to_record_batch(&self.fields, &values).map_err(|e| failed(&e))?;
        let mask = self
            .expr
            .evaluate(&batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| failed(&e))?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| failed(&"the condition did not produce booleans"))?;
        let keep: Vec<bool> = (0..mask.len())
            .map(|i| mask.is_valid(i) && mask.value(i))
            .collect();
        Ok(records
            .into_iter()
            .zip(keep)
            .filter_map(|(r, k)| k.then_some(r))
            .collect())
    }
}
