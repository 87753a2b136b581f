-- Mean birth year by sex.
SELECT sex, avg(birth_year) AS mean_birth_year FROM patient GROUP BY sex ORDER BY sex
