-- Patients by sex (one row per patient in `patient`).
SELECT sex, count(*) AS n FROM patient GROUP BY sex ORDER BY sex
